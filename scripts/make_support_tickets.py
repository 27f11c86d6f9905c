"""Generate ``support_tickets.jsonl``: a reproducible sample of support tickets for the demo DAGs.

The company is fictional: *Brightcart* sells a SaaS store builder (storefront, payments, inventory
sync, marketplace connector, public API, e-mail campaigns, mobile apps) and, through its own web
shop, the hardware that goes with it (POS terminals, card readers, label and receipt printers).

Tickets are composed from hand-written fragments: about thirty scenarios (billing disputes, login
problems, bug reports with steps to reproduce, feature requests, shipping delays, refunds, praise,
escalations, GDPR requests, API rate limits, integration questions, ...), each with several
problem descriptions full of concrete details (order numbers, amounts, dates, error messages,
versions), wrapped in channel-specific framing (e-mail, chat transcript, voicemail transcription,
web form), tier-specific remarks and tone variants. A handful of tickets are written in Italian,
German, French and Spanish. Names, companies and addresses are invented; every e-mail address uses
``example.com``.

The random seed is fixed, so running the script again rewrites the same file::

    python scripts/make_support_tickets.py            # writes dags/data/support_tickets.jsonl
    python scripts/make_support_tickets.py --stats    # also prints a short summary

It lives in ``scripts/``, not next to the file in ``dags/data/``, so that nothing that parses the
DAGs folder ever sees it.
"""

from __future__ import annotations

import argparse
import json
import random
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

SEED = 20250417
N_ENGLISH = 240
OUT_FILE = Path(__file__).resolve().parent.parent / "dags" / "data" / "support_tickets.jsonl"
START = datetime(2025, 1, 6)  # timestamps are UTC
END = datetime(2025, 6, 27)
MIN_WORDS, MAX_WORDS = 40, 250

# --------------------------------------------------------------------------------------------------
# People, companies, products
# --------------------------------------------------------------------------------------------------
FIRST_NAMES = [
    "Amelia",
    "Tobias",
    "Priya",
    "Marcus",
    "Leonie",
    "Daniel",
    "Yuki",
    "Hannah",
    "Omar",
    "Grace",
    "Mateo",
    "Ingrid",
    "Samuel",
    "Chiara",
    "Noah",
    "Fatima",
    "Elliot",
    "Sofia",
    "Ravi",
    "Maren",
    "Lucas",
    "Aisha",
    "Jonas",
    "Emily",
    "Kwame",
    "Nina",
    "Felix",
    "Olivia",
    "Hugo",
    "Zara",
    "Connor",
    "Mei",
    "Oscar",
    "Ruth",
    "Theo",
    "Ines",
    "Declan",
    "Anya",
    "Caleb",
    "Lena",
]
LAST_NAMES = [
    "Hartwell",
    "Okafor",
    "Lindqvist",
    "Moreau",
    "Brennan",
    "Castellano",
    "Nakamura",
    "Whitlock",
    "Adeyemi",
    "Kowalczyk",
    "Fairbanks",
    "Duarte",
    "Halvorsen",
    "Petrakis",
    "Sandoval",
    "Thorne",
    "Vasquez",
    "Ellery",
    "Marchetti",
    "Quinlan",
    "Rasmussen",
    "Abernathy",
    "Oyelaran",
    "Bellamy",
    "Kaur",
    "Ferreira",
    "Lachance",
    "Novak",
    "Strand",
    "Wexford",
    "Yilmaz",
    "Ashdown",
]
COMPANIES = [
    "Pinewood Ceramics",
    "Northgate Bikes",
    "Saltmarsh Candle Co.",
    "Harbor & Vine",
    "Lumen Optics",
    "Copperleaf Tea",
    "Tidewater Outdoor",
    "Bramble Kids",
    "Quarry Street Coffee",
    "Foxglove Florals",
    "Ironbark Tools",
    "Meadowlark Stationery",
    "Redfern Audio",
    "Little Alder Bakery",
    "Stonefly Fishing",
    "Cobalt Pet Supply",
    "Juniper & Sage",
    "Brightwater Surf",
    "Oakhollow Furniture",
    "Velvet Moth Vintage",
    "Kindred Threads",
    "Summit Climbing Gear",
    "Hazel Lane Books",
    "Ember & Ash Grills",
    "Seaglass Jewelry",
]
ROLES = [
    "Owner",
    "Founder",
    "Operations Lead",
    "E-commerce Manager",
    "Head of Finance",
    "CTO",
    "Store Manager",
    "Developer",
    "Customer Experience Lead",
    "Office Manager",
]
AGENTS = ["Jess", "Mark", "Aleksandra", "Tom", "Priyanka", "Sven", "Carla", "Devon"]

HARDWARE = {
    "POS Terminal T2": 329,
    "Card Reader R1": 59,
    "Label Printer LP-40": 149,
    "Barcode Scanner S3": 89,
    "Receipt Printer RP-80": 119,
    "Cash Drawer CD-1": 99,
}
CARRIERS = ["UPS", "DHL Express", "FedEx", "DPD", "Royal Mail", "USPS Priority"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
BROWSERS = [
    "Chrome 124 on macOS 14.4",
    "Firefox 125 on Windows 11",
    "Safari 17.4 on macOS 14.4",
    "Edge 123 on Windows 10",
    "Chrome 123 on Ubuntu 22.04",
    "Safari on iPadOS 17.4",
]


def ascii_slug(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in plain.lower() if c.isalnum())


@dataclass
class Ctx:
    """Everything a scenario may refer to for one ticket."""

    r: random.Random
    created: datetime
    tier: str
    channel: str
    first: str
    last: str
    company: str
    role: str
    currency: str
    date_style: int

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def email(self) -> str:
        return f"{ascii_slug(self.first)}.{ascii_slug(self.last)}@example.com"

    @property
    def store(self) -> str:
        words = [ascii_slug(w) for w in self.company.split() if ascii_slug(w) not in ("", "co")]
        return f"{'-'.join(words)}.brightcart.shop"

    def money(self, usd: float) -> str:
        rate = {"$": 1.0, "€": 0.93, "£": 0.79}[self.currency]
        value = usd * rate
        text = f"{value:,.2f}" if value % 1 else f"{value:,.0f}"
        return f"{self.currency}{text}"

    def day(self, days_ago: int) -> str:
        d = self.created - timedelta(days=days_ago)
        return [
            f"{MONTHS[d.month - 1]} {d.day}",
            f"{d.day} {MONTHS[d.month - 1]}",
            d.strftime("%Y-%m-%d"),
            d.strftime("%m/%d"),
        ][self.date_style]

    def weekday_ahead(self, days: int = 3) -> str:
        return WEEKDAYS[(self.created + timedelta(days=days)).weekday() % 5]

    def order(self) -> str:
        return f"BC-{self.r.randint(2_100_000, 2_899_999)}"

    def invoice(self) -> str:
        return f"INV-{self.created.year}-{self.r.randint(10000, 99999)}"

    def plan_price(self) -> tuple[str, float]:
        if self.tier == "enterprise":
            return "Enterprise", float(self.r.choice([1200, 1450, 2300, 3100]))
        if self.tier == "pro":
            return self.r.choice([("Pro monthly", 39.0), ("Pro annual", 390.0), ("Pro monthly", 79.0)])
        return "Pro trial upgrade", 39.0


@dataclass
class Draft:
    """What a scenario says; the channel framing decides how it is written down."""

    subject: str
    product: str
    body: list[str]  # core sentences, always kept
    ask: str
    details: list[str] = field(default_factory=list)  # optional paragraphs, dropped if too long
    mood: str = "calm"  # calm | frustrated | angry | happy
    topic: str = "General question"  # what a web-form user picks from the drop-down
    ref: str = ""  # order / invoice / request id shown in web forms


def pick(r: random.Random, *options: str) -> str:
    return r.choice(options)


def some(r: random.Random, *options: str) -> list[str]:
    """One or two of the options (none if there are none), in random order."""
    return r.sample(options, k=min(len(options), r.choice([1, 1, 2])))


@dataclass
class V:
    """One way a scenario can happen: a body and the subjects, asks and details that fit it."""

    body: str
    subjects: tuple[str, ...] = ()
    asks: tuple[str, ...] = ()
    details: tuple[str, ...] = ()
    product: str = ""
    ref: str | None = None  # None: the scenario's reference applies


def draft(
    c: Ctx,
    variants: list[V],
    *,
    product: str,
    topic: str,
    subjects: tuple[str, ...] = (),
    asks: tuple[str, ...] = (),
    details: tuple[str, ...] = (),
    moods: tuple[str, ...] = ("calm",),
    lead: str = "",
    ref: str = "",
) -> Draft:
    """Pick one variant and combine it with the scenario-wide subjects, asks and details."""
    r = c.r
    v = r.choice(variants)
    extra = v.details + details
    return Draft(
        subject=r.choice(v.subjects + subjects),
        product=v.product or product,
        body=[lead, v.body] if lead else [v.body],
        ask=r.choice(v.asks + asks),
        details=list(extra) if r.random() < 0.2 else some(r, *extra),  # some customers say everything
        mood=r.choice(moods),
        topic=topic,
        ref=ref if v.ref is None else v.ref,
    )


# --------------------------------------------------------------------------------------------------
# Scenarios (English)
# --------------------------------------------------------------------------------------------------
def billing_double_charge(c: Ctx) -> Draft:
    r = c.r
    plan, usd = c.plan_price()
    amt, inv, inv2, last4, d = c.money(usd), c.invoice(), c.invoice(), r.randint(1000, 9999), r.randint(2, 12)
    return draft(
        c,
        [
            V(
                f"I just noticed two identical charges of {amt} on the card ending in {last4}, both dated {c.day(d)}. "
                f"We only have one store ({c.store}) so there should only be one {plan} subscription.",
                ("Duplicate charge on my card", f"Charged twice on {c.day(d)}"),
                details=(
                    f"The second one shows on the statement as 'BRIGHTCART*SUBSCR {r.randint(100000, 999999)}'.",
                    "Both charges are already settled, not pending, according to the bank.",
                ),
            ),
            V(
                f"Our finance team flagged a duplicate payment: invoice {inv} was paid on {c.day(d + 6)} and the same "
                f"amount ({amt}) was taken again on {c.day(d)} under invoice {inv2}.",
                (f"Double payment - {inv} / {inv2}", "Invoice paid twice"),
                asks=("Please cancel one of the two invoices and refund it.",),
                details=("We replaced the card on file the day before the renewal, in case that is relevant.",),
            ),
            V(
                f"My bank statement shows {amt} taken on {c.day(d + 1)} and again on {c.day(d)}. The billing page in "
                "the dashboard only lists one invoice, so I have no idea where the second charge comes from.",
                ("Why was I billed two times this month?", "Mystery second charge"),
                details=("I can send a screenshot of the statement with the card number masked if that helps.",),
            ),
        ],
        product="Billing & Subscriptions",
        topic="Billing",
        ref=inv,
        subjects=(f"Charged twice for {plan} subscription",),
        asks=(
            "Please refund the duplicate charge and confirm which invoice is the valid one.",
            "Could you check what happened and refund the extra amount?",
        ),
        moods=("calm", "frustrated", "frustrated"),
    )


def billing_after_cancel(c: Ctx) -> Draft:
    r = c.r
    amt, gone = c.money(r.choice([39, 79, 390])), r.randint(20, 60)
    return draft(
        c,
        [
            V(
                f"I cancelled our subscription on {c.day(gone)} (I still have the confirmation e-mail, reference "
                f"CX-{r.randint(10000, 99999)}) but today I was charged {amt} for another month.",
                ("Charged after cancelling", "Subscription cancelled but still billed"),
            ),
            V(
                f"We downgraded from Pro to the free plan on {c.day(gone)}. The downgrade shows in the dashboard, yet "
                f"a renewal of {amt} went through on {c.day(r.randint(1, 5))}.",
                ("Billed after downgrade to free plan", "Still paying for Pro after downgrade"),
                details=("The account settings page says 'Free plan' and has done since the downgrade.",),
            ),
            V(
                f"Our shop has been closed since {c.day(gone)} and I clicked 'Cancel plan' the same day. Nevertheless "
                f"there is a new charge of {amt} on our company card.",
                ("Unexpected renewal charge", "Charge on a closed account"),
            ),
        ],
        product="Billing & Subscriptions",
        topic="Billing",
        subjects=("Refund needed - subscription was cancelled",),
        asks=(
            "Please refund this charge in full and make sure nothing else is billed.",
            "I expect a full refund. Please confirm that the subscription is really cancelled now.",
            "Can you refund it and send me written confirmation that the account is closed?",
        ),
        details=("Nobody on our side has logged in since then, so this cannot be a reactivation.",),
        moods=("frustrated", "angry", "calm"),
    )


def billing_invoice_details(c: Ctx) -> Draft:
    r = c.r
    inv = c.invoice()
    vat = pick(
        r,
        f"DE{r.randint(100000000, 999999999)}",
        f"IE{r.randint(1000000, 9999999)}W",
        f"GB{r.randint(100000000, 999999999)}",
        f"NL{r.randint(100000000, 999999999)}B01",
    )
    last_month = MONTHS[(c.created.month - 2) % 12]
    return draft(
        c,
        [
            V(
                f"Our invoices are missing our VAT number ({vat}), so our accountant cannot reclaim the VAT. This "
                f"affects invoice {inv} and every invoice since we signed up.",
                ("VAT number missing from invoices", f"Invoice {inv} without VAT ID"),
                details=("The VAT number has been entered under Settings > Billing for months.",),
            ),
            V(
                f"We changed our registered company name to {c.company} Ltd and moved offices, but invoice {inv} still "
                "shows the old name and address even though I updated them under Settings > Billing.",
                ("Invoice company details are wrong", f"Wrong address on {inv}"),
            ),
            V(
                f"Our procurement department requires a purchase order number on every invoice. Could invoice {inv} be "
                f"reissued with PO-{r.randint(4000, 9000)}? I could not find a field for it in the dashboard.",
                ("Need PO number on invoices", "Purchase order reference on invoices"),
                asks=("Is there a way to add the PO number to future invoices automatically?",),
            ),
            V(
                f"I need all invoices for {last_month} as PDFs for our auditors, but the download button on the "
                "billing page returns an empty file (0 bytes).",
                ("Invoice PDF download is empty", f"Need {last_month} invoices for audit"),
                asks=("Could you e-mail them to me directly?",),
            ),
        ],
        product="Billing & Subscriptions",
        topic="Billing",
        ref=inv,
        subjects=(f"Correction needed on invoice {inv}",),
        asks=(
            "Could you reissue the invoice(s) with the right details?",
            "What is the fastest way to get this sorted before our quarter closes?",
        ),
        moods=("calm",),
    )


def billing_price_increase(c: Ctx) -> Draft:
    r = c.r
    old, new = r.choice([(29, 39), (39, 49), (59, 79), (39, 59)])
    return draft(
        c,
        [
            V(
                f"I got the e-mail saying our plan goes from {c.money(old)} to {c.money(new)} a month from the next "
                "cycle. That is a big jump for a small shop like ours and nothing in the product has changed for us.",
                ("Price increase", "New pricing is too expensive for us"),
            ),
            V(
                f"We have been customers for {r.randint(2, 6)} years and now the price rises by more than 30% with one "
                "month's notice. The new 'included' features are things we never asked for.",
                ("Loyal customer, unhappy about new prices", "Keep legacy pricing?"),
                details=("We only use the storefront and payments, not the new AI features.",),
            ),
            V(
                f"So the plan is now {c.money(new)}/month instead of {c.money(old)}? I only found out from my bank "
                "statement; the announcement must have gone to spam.",
                ("Why did my plan go up?", "Unannounced price change?"),
                asks=("Where was this announced, and can I still switch plans before the next renewal?",),
            ),
        ],
        product="Billing & Subscriptions",
        topic="Billing",
        asks=(
            "Is there any way to stay on the old price, for example by switching to annual billing?",
            "Is there a legacy or small-business plan we can move to?",
        ),
        details=(
            "To be honest, competitors are offering us a free migration right now.",
            "Our margins are already thin this year.",
        ),
        moods=("frustrated", "angry", "calm"),
    )


def billing_payment_failed(c: Ctx) -> Draft:
    r = c.r
    code = pick(
        r,
        "ERR_PAYMENT_DECLINED (code 51)",
        "card_declined: do_not_honor",
        "3DS authentication failed (AUTH_3DS_TIMEOUT)",
        "ERR_CARD_EXPIRED",
    )
    return draft(
        c,
        [
            V(
                f"Our renewal failed and the admin now shows a red banner: '{code}'. The card works everywhere else "
                "and the bank says they see no attempt from you.",
                (f"Renewal failed: {code.split(' ')[0]}",),
            ),
            V(
                f"I tried to update the card three times and every time I get '{code}'. Meanwhile our store has been "
                f"switched to 'payment overdue' mode and shows a warning to customers at {c.store}.",
                ("Store in overdue mode but card is fine", "Can't update payment card"),
                asks=("Can you remove the warning from the storefront while we sort this out?",),
            ),
            V(
                f"The payment for invoice {c.invoice()} keeps failing with '{code}'. I added a second card from "
                "another bank and it failed with the same message.",
                ("Payment keeps failing", "Two different cards declined"),
            ),
        ],
        product="Billing & Subscriptions",
        topic="Billing",
        asks=(
            "How can we pay so that the store is not suspended?",
            "Can we pay by bank transfer instead?",
            "Can you give us a few days' grace period while we sort it out with the bank?",
        ),
        moods=("frustrated", "calm"),
    )


def payouts_delayed(c: Ctx) -> Draft:
    r = c.r
    amount = c.money(r.randint(800, 14000) + r.choice([0, 0.45, 0.9]))
    return draft(
        c,
        [
            V(
                f"Our payout of {amount} scheduled for {c.day(r.randint(2, 5))} has not arrived. The payouts page says "
                f"'In transit' with reference PO-{r.randint(100000, 999999)}, but our bank has nothing.",
                ("Payout not received", f"Missing payout of {amount}"),
                details=("We did not change our bank details recently.",),
            ),
            V(
                f"Brightcart Payments has been holding {amount} of our sales for {r.randint(6, 12)} days now. The "
                "dashboard just says 'Under review' and nobody has told us what is being reviewed.",
                ("Funds on hold - why?", "Payouts under review for days"),
                asks=("Please tell us what documents you need, if any.",),
                details=("We had a big sales weekend, maybe that triggered something?",),
            ),
            V(
                f"Payouts switched from daily to weekly without any warning and {amount} is now stuck in 'pending'. "
                "We rely on that cash to pay suppliers.",
                ("Payout schedule changed without notice",),
                asks=("Please switch us back to daily payouts.",),
            ),
        ],
        product="Brightcart Payments",
        topic="Payments",
        asks=("When will the money be released?", "Can someone explain why the payout is held?"),
        details=(f"Our last successful payout was on {c.day(r.randint(9, 15))}.",),
        moods=("frustrated", "angry", "frustrated"),
    )


def login_2fa(c: Ctx) -> Draft:
    return draft(
        c,
        [
            V(
                "My phone was stolen last weekend and with it the authenticator app, so I cannot get past the "
                "two-factor screen. I have the password but not the backup codes.",
                ("Locked out - lost 2FA device", "Phone stolen, can't log in"),
            ),
            V(
                "I switched to a new phone and did not move Google Authenticator over. Now every login asks for a "
                "6-digit code that I cannot generate.",
                ("New phone, no authenticator codes", "Can't log in (two-factor)"),
            ),
            V(
                "The SMS codes for two-factor login never arrive. I tried 'resend' about ten times over two hours. My "
                "number has not changed and other services text me without problems.",
                ("2FA codes not arriving", "No SMS verification code"),
                asks=("Can you switch my 2FA to an authenticator app or e-mail codes?",),
            ),
        ],
        product="Account & Security",
        topic="Login / account access",
        asks=(
            "What do you need from me to reset 2FA?",
            "Please help me get back into the account.",
            "How can I verify my identity so you can disable 2FA temporarily?",
        ),
        details=(
            f"I am the only admin on the account for {c.company}, so nobody else can reset it.",
            "I can prove ownership with the last invoice number or the card we pay with.",
            "I have a batch of orders to process today, so this is blocking us.",
        ),
        moods=("frustrated", "calm", "frustrated"),
    )


def login_password(c: Ctx) -> Draft:
    r = c.r
    return draft(
        c,
        [
            V(
                f"The password reset e-mail never arrives. I requested it several times for {c.email}, checked spam "
                "and the quarantine of our mail server: nothing.",
                ("Password reset e-mail not received", "No reset e-mail"),
                asks=("Can you send the link manually or reset it from your side?",),
                details=("Our IT uses Mimecast, maybe it strips the links?",),
            ),
            V(
                "When I click the link in the password reset e-mail I land on a page saying 'This link has expired or "
                "is invalid', even if I click it within a minute.",
                ("Reset link says expired", "Password reset link invalid"),
            ),
            V(
                "I reset my password successfully, but the new password is rejected at login with 'Invalid "
                "credentials'. I am typing it carefully and have tried two browsers.",
                ("New password not accepted", "Login fails after password reset"),
            ),
        ],
        product="Account & Security",
        topic="Login / account access",
        subjects=("Can't log in",),
        asks=("Could you check the logs for my account?", "What else can I try?"),
        details=(f"Browser: {r.choice(BROWSERS)}.", "It worked fine last month."),
        moods=("calm", "frustrated"),
    )


def login_sso(c: Ctx) -> Draft:
    r = c.r
    idp = pick(r, "Okta", "Microsoft Entra ID", "Google Workspace", "OneLogin")
    err = pick(
        r,
        "SAML response signature invalid",
        "InResponseTo does not match any pending request",
        "Audience restriction failed: expected urn:brightcart:sp",
        "User not provisioned (SCIM 404)",
    )
    return draft(
        c,
        [
            V(
                f"Since this morning none of our staff can log in through {idp}. After the redirect they get '{err}'. "
                "We rotated the signing certificate yesterday and uploaded the new one in your SSO settings.",
                ("Users can't sign in with SSO after cert rotation",),
            ),
            V(
                f"SSO via {idp} is failing for about half of our {r.randint(12, 140)} users with '{err}'. The others "
                "can log in fine. We did not change anything on our side as far as I know.",
                ("SSO failing for some users",),
            ),
            V(
                f"New hires provisioned through {idp} cannot sign in: they see '{err}'. Existing users are fine.",
                ("New users can't log in via SSO",),
            ),
        ],
        product="Account & Security",
        topic="Login / account access",
        subjects=(f"SSO login broken ({idp})", f"SAML error: {err[:40]}"),
        asks=(
            "Please escalate to your SSO engineers.",
            "Can you check the SSO configuration on your side?",
            "Can you temporarily re-enable password login for our admins?",
        ),
        details=(
            "We have a sale starting tomorrow and the warehouse team needs access.",
            "Password login is disabled for the organisation, so there is no workaround.",
            "I can share the SAML trace (HAR file) privately.",
        ),
        moods=("frustrated", "angry", "calm"),
    )


def account_ownership(c: Ctx) -> Draft:
    return draft(
        c,
        [
            V(
                "The colleague who created our account left the company and her e-mail address no longer exists. She "
                "was the only owner, so nobody can change billing or add users.",
                ("Owner left the company", "Transfer account ownership"),
            ),
            V(
                "Our account is registered to a freelancer who built the store for us three years ago. We cannot reach "
                "him any more and need to transfer ownership to our own company address.",
                ("Transfer account ownership", "Account registered to former freelancer"),
            ),
            V(
                f"The account was locked after too many failed login attempts ('Account temporarily locked, try again "
                f"in 60 minutes'), but it has been locked since {c.day(2)}.",
                ("Account still locked", "Locked out for two days"),
                asks=("Please unlock the account or tell me what is going on.",),
            ),
        ],
        product="Account & Security",
        topic="Login / account access",
        asks=(
            "What is the process to transfer ownership to me?",
            "What documents do you need to verify that we own the business?",
        ),
        moods=("calm", "frustrated"),
    )


def bug_checkout(c: Ctx) -> Draft:
    r = c.r
    err = pick(
        r,
        "TypeError: Cannot read properties of undefined (reading 'variantId')",
        f"500 Internal Server Error (request id req_{r.getrandbits(40):010x})",
        "'Something went wrong. Please try again.' with no other detail",
    )
    theme = pick(r, "theme 'Aurora' v3.2.1", "theme 'Minimal' v2.8.0", "a custom theme based on 'Aurora' 3.1")
    return draft(
        c,
        [
            V(
                f"Customers cannot complete checkout when a discount code is applied. The page shows {err}.",
                ("Checkout broken with discount codes",),
                details=(
                    f"Steps to reproduce: 1) open {c.store}/products/any-item 2) pick a size 3) add to cart "
                    "4) apply code SPRING10 5) click 'Checkout'. Without the code it works.",
                    "Expected: the payment step opens with the discounted total. Actual: the error above, and "
                    "the discount is removed from the cart when the customer goes back.",
                ),
            ),
            V(
                f"Since {c.day(r.randint(1, 4))} checkout fails for any product that has more than one variant. The "
                f"browser console shows {err}.",
                ("Bug: checkout error on multi-variant products",),
                details=(
                    "Steps: add two different variants of the same product to the cart, go to checkout, fill "
                    f"in the address, press 'Continue'. Reproduced in {r.choice(BROWSERS)} and on an iPhone.",
                ),
            ),
            V(
                "Guest checkout stopped working for shipping addresses outside the US: the 'Continue to payment' "
                "button spins and then shows ERR_SHIPPING_RATE_UNAVAILABLE.",
                ("Guest checkout fails outside US", "International customers can't check out"),
                details=(
                    "To reproduce: go to checkout as a guest, choose Canada or any EU country, enter any "
                    "postcode, and try to continue. Logged-in customers are not affected.",
                ),
            ),
        ],
        product="Brightcart Storefront",
        topic="Technical problem",
        subjects=("Customers can't check out", "URGENT checkout bug"),
        asks=(
            "Please fix this urgently or tell us a workaround.",
            "Can you look into it today?",
            "Is this a known issue? Any ETA?",
        ),
        details=(
            f"We have lost around {r.randint(8, 60)} orders since it started, judging by abandoned carts.",
            f"We are using {theme} and have not edited the checkout templates.",
            "Our ads are running this week so every hour counts.",
        ),
        moods=("frustrated", "angry", "calm", "frustrated"),
    )


def bug_mobile(c: Ctx) -> Draft:
    r = c.r
    platform = pick(r, "iOS", "Android")
    app_v = pick(r, "4.12.1", "4.13.0", "4.11.7", "5.0.2")
    dev = (
        pick(r, "iPhone 13, iOS 17.4.1", "iPhone 15 Pro, iOS 17.5", "iPad Air, iPadOS 17.4")
        if platform == "iOS"
        else pick(r, "Pixel 7, Android 14", "Galaxy S22, Android 14", "Galaxy Tab A8")
    )
    return draft(
        c,
        [
            V(
                f"The Brightcart {platform} app ({app_v}) crashes as soon as I open the Orders tab. It started right "
                "after the last update.",
                (f"{platform} app crashes ({app_v})", "App crashes on Orders tab"),
            ),
            V(
                f"Push notifications for new orders stopped arriving after updating the {platform} app to {app_v}. "
                "Notifications are enabled in the phone settings.",
                ("No order notifications since update", f"Push notifications broken in {app_v}"),
            ),
            V(
                f"In the {platform} app {app_v}, scanning a barcode to look up a product freezes the camera preview "
                "and the app has to be force-closed.",
                ("Barcode scanning freezes the app",),
            ),
            V(
                f"Since version {app_v} the {platform} app logs me out every time I switch to another app and back.",
                ("App keeps logging me out",),
            ),
        ],
        product=f"Brightcart Mobile ({platform})",
        topic="Technical problem",
        subjects=(f"{platform} app bug after update",),
        asks=(
            "Is a fix coming?",
            "Can I downgrade to the previous version somehow?",
            "Please let me know if you need logs.",
        ),
        details=(
            f"Device: {dev}. I already tried reinstalling and clearing the cache.",
            "Our staff use the app in the shop all day so this is really annoying.",
            "The web dashboard works fine on the same account.",
        ),
        moods=("calm", "frustrated"),
    )


def bug_inventory(c: Ctx) -> Draft:
    r = c.r
    market = pick(r, "Amazon", "eBay", "Etsy", "Google Shopping")
    sku = f"{r.choice(['MUG', 'TEE', 'CND', 'LMP', 'BAG', 'HOOD'])}-{r.randint(100, 999)}-{r.choice('SMLX')}"
    return draft(
        c,
        [
            V(
                f"Stock levels are not syncing to {market} any more. SKU {sku} shows 0 in Brightcart but {market} "
                f"still lists {r.randint(5, 40)} available, so we keep overselling.",
                ("Overselling because of sync bug", f"Inventory not syncing to {market}"),
            ),
            V(
                f"Inventory Sync doubled our stock counts overnight: every product on {market} now shows twice the "
                "real quantity. The sync log just says 'completed'.",
                (f"Stock counts doubled on {market}",),
                product="Inventory Sync",
            ),
            V(
                f"The last successful sync with {market} was {r.randint(2, 6)} days ago. Since then the log shows "
                f"'SyncError: listing {r.randint(10**9, 10**10 - 1)} not found' for dozens of items.",
                (f"SyncError: listing not found ({market})",),
                product="Marketplace Connector",
            ),
        ],
        product="Inventory Sync",
        topic="Technical problem",
        subjects=(f"Stock counts wrong on {market}",),
        asks=(
            "Please investigate urgently.",
            "How do we force a full resync safely?",
            "Can you confirm whether this is a bug on your side or on the marketplace side?",
        ),
        details=(
            f"We had to cancel {r.randint(3, 25)} orders and our seller rating is dropping.",
            "A manual 'Sync now' runs but changes nothing.",
            f"We use the Marketplace Connector with {market} and two warehouses.",
        ),
        moods=("frustrated", "angry", "calm"),
    )


def bug_export(c: Ctx) -> Draft:
    r = c.r
    return draft(
        c,
        [
            V(
                "The CSV export of orders shows every date one day earlier than in the dashboard. I think the export "
                "uses UTC while the store is set to Europe/Berlin.",
                ("Order export: wrong dates",),
            ),
            V(
                "Customer names with accents come out garbled in the CSV export (e.g. 'M\u00c3\u00bcller' instead of "
                "'M\u00fcller'). Excel and Google Sheets both show the same thing.",
                ("CSV export encoding broken",),
            ),
            V(
                f"Exporting more than about {r.choice([5000, 10000, 20000]):,} orders never finishes: the progress bar "
                "stays at 99% and the e-mail with the file never comes.",
                ("Export never finishes",),
            ),
            V(
                "The 'Sales by product' report in Analytics Pro does not match the order export: the report is "
                f"{c.money(r.randint(300, 4000))} lower for last month.",
                ("Analytics numbers don't match export",),
                product="Analytics Pro",
            ),
        ],
        product="Brightcart Storefront",
        topic="Technical problem",
        asks=(
            "Is there a fix or a workaround?",
            "Our accountant needs correct numbers this week.",
            "Could you check this?",
        ),
        moods=("calm",),
    )


def bug_campaigns(c: Ctx) -> Draft:
    r = c.r
    return draft(
        c,
        [
            V(
                f"Our newsletter went out twice to all {r.randint(1200, 18000):,} subscribers on "
                f"{c.day(r.randint(1, 3))}. We only pressed 'Send' once, and now people are unsubscribing and "
                "complaining.",
                ("Campaign sent twice!",),
                asks=("Please find out what happened and make sure it does not happen again.",),
            ),
            V(
                "The unsubscribe link in our campaigns leads to a 404 page. This is a legal problem for us: we cannot "
                "send e-mails without a working unsubscribe.",
                ("Unsubscribe link broken",),
            ),
            V(
                "Scheduled campaigns go out one hour late since the clock change. The schedule says 09:00 but they "
                "are sent at 10:00.",
                ("Scheduled e-mails sent late",),
            ),
        ],
        product="Email Campaigns",
        topic="Technical problem",
        asks=("When will this be fixed?", "Can you check the sending logs?"),
        moods=("angry", "frustrated", "calm"),
    )


def performance(c: Ctx) -> Draft:
    r = c.r
    return draft(
        c,
        [
            V(
                f"The admin dashboard has become extremely slow: opening the Orders page takes {r.randint(20, 60)} "
                "seconds and sometimes ends in '504 Gateway Timeout'.",
                ("Dashboard very slow", "504 Gateway Timeout"),
            ),
            V(
                f"Our storefront loads in {r.uniform(6, 11):.1f} s according to PageSpeed; it used to be under 2 s. We "
                "have not added any apps or changed the theme.",
                ("Store got slow", "Storefront load time 4x worse"),
            ),
            V(
                "Saving a product with more than 50 variants times out. We get 'Request took too long' and only some "
                "of the variants are saved.",
                ("Timeouts saving products",),
            ),
        ],
        product="Brightcart Storefront",
        topic="Technical problem",
        asks=("Is there an ongoing incident?", "Can your engineers check our store?", "Please advise."),
        details=(
            "It is worst in the morning, European time.",
            f"Tested from {r.choice(BROWSERS)}.",
            "Your status page says all systems operational.",
        ),
        moods=("frustrated", "calm", "angry"),
    )


def outage(c: Ctx) -> Draft:
    r = c.r
    return draft(
        c,
        [
            V(
                f"Our store {c.store} is down: it shows 'Store unavailable' to every visitor. It started about "
                f"{r.randint(10, 50)} minutes ago.",
                ("STORE DOWN",),
            ),
            V(
                "Nobody in our team can reach the admin; we get a blank page after login. Our customers can still "
                "browse but cannot pay.",
                ("Outage? Admin not loading",),
            ),
            V(
                "Card payments on the POS terminals fail with 'Host unreachable' in all three of our shops since "
                "opening time.",
                ("URGENT: card payments failing in store",),
                product="Brightcart Payments",
            ),
        ],
        product="Brightcart Storefront",
        topic="Technical problem",
        asks=(
            "Is this on your side? Please tell us something.",
            "Is there an outage? Please respond ASAP.",
            "What is the ETA?",
        ),
        moods=("angry", "frustrated"),
    )


FEATURES = [
    (
        "Bulk edit for product tags",
        "We have around 3,000 products and need to change tags in bulk. Right now I edit them one by one or "
        "export/import a CSV, which breaks our images.",
        "Brightcart Storefront",
    ),
    (
        "Dark mode for the admin",
        "Our warehouse team works night shifts and the admin is very bright on the big screens. A dark mode "
        "would be a real quality-of-life improvement.",
        "Brightcart Storefront",
    ),
    (
        "Webhooks for refunds",
        "There are webhooks for orders.created and orders.paid but nothing for refunds. Our ERP needs to know "
        "when a refund happens; polling the API every minute is wasteful.",
        "Brightcart API",
    ),
    (
        "Custom staff roles",
        "We would like a role that can process orders and refunds but cannot see revenue reports. The three "
        "fixed roles are too coarse for a team of our size.",
        "Account & Security",
    ),
    (
        "Multi-currency pricing",
        "We sell to the UK and the EU and would like to set fixed prices per currency instead of automatic "
        "conversion, which gives us prices like \u20ac23.87.",
        "Brightcart Storefront",
    ),
    (
        "Partial shipments",
        "When one item of an order is backordered we want to ship the rest now and send a second tracking number "
        "later. Today we have to split the order manually.",
        "Brightcart Storefront",
    ),
    (
        "Scheduled price changes",
        "It would be great to schedule sale prices to start and end at a specific time, e.g. Black Friday at "
        "00:00. Right now someone has to stay up to change them.",
        "Brightcart Storefront",
    ),
    (
        "Label Printer support for 62mm rolls",
        "The LP-40 only offers 4x6 label templates in the app. We use 62 mm continuous rolls for product labels "
        "and would love a template for that.",
        "Label Printer LP-40",
    ),
    (
        "Export API for analytics",
        "Please expose the Analytics Pro reports through the API so we can load them into our BI tool instead of "
        "downloading CSVs every Monday.",
        "Analytics Pro",
    ),
    (
        "Offline mode for POS",
        "When the shop Wi-Fi drops, the POS app stops taking card payments. An offline mode that queues "
        "transactions would save us at markets and fairs.",
        "POS Terminal T2",
    ),
]


def feature_request(c: Ctx) -> Draft:
    r = c.r
    variants = [
        V(text, (f"Feature request: {title}", f"Suggestion - {title.lower()}", title), product=product)
        for title, text, product in FEATURES
    ]
    return draft(
        c,
        variants,
        product="Brightcart Storefront",
        topic="Feedback / feature request",
        lead=pick(
            r,
            "I would like to suggest a feature.",
            "Small feature request from our side.",
            "Not a bug, more of a wish.",
            "A suggestion after using Brightcart for a while.",
        ),
        asks=(
            "Is this on the roadmap?",
            "Any chance this could be added this year?",
            "Could you pass it on to the product team?",
        ),
        details=(
            "Happy to join a beta or a user interview if that helps.",
            "Other platforms we evaluated have this, so it would help us stay.",
            "I saw a similar request on the community forum with lots of upvotes.",
            "If there is an app in the marketplace that already does this, please point me to it.",
        ),
        moods=("calm", "happy", "calm"),
    )


def shipping_delay(c: Ctx) -> Draft:
    r = c.r
    item, usd = r.choice(list(HARDWARE.items()))
    qty = r.choice([1, 1, 2, 3, 5])
    what = f"{qty} x {item}" if qty > 1 else f"a {item}"
    order, carrier = c.order(), r.choice(CARRIERS)
    tracking = f"{r.choice(['1Z', 'JD', 'TBA', '78'])}{r.randint(10**9, 10**10 - 1)}"
    return draft(
        c,
        [
            V(
                f"I ordered {what} (order {order}) on {c.day(r.randint(9, 16))} with express shipping. The {carrier} "
                f"tracking ({tracking}) has said 'Label created' for a week.",
                ("Tracking not updating", f"Order {order} stuck at 'Label created'"),
                details=("The carrier says they never received the parcel from your warehouse.",),
            ),
            V(
                f"Order {order} ({what}) was promised for {c.day(r.randint(2, 5))} and still has not arrived. "
                f"{carrier} tracking shows it stuck at a depot since {c.day(r.randint(6, 8))}.",
                (f"Order {order} not delivered", "Shipping delay"),
                details=("I checked with our reception, nothing was delivered.",),
            ),
            V(
                f"Where is my order {order}? I paid {c.money(usd * qty)} on {c.day(r.randint(10, 20))}, got an order "
                "confirmation, and then nothing: no shipping e-mail, no tracking number.",
                (f"Where is my {item}?", "No shipping confirmation"),
            ),
        ],
        product=item,
        topic="Orders & shipping",
        ref=order,
        asks=(
            "Please tell me where it is or send a replacement.",
            "Can you check with the warehouse and give me a real delivery date?",
            "If it cannot arrive this week I want to cancel and get a refund.",
        ),
        details=(f"We are opening a new shop on {c.weekday_ahead(4)} and need the hardware installed.",),
        moods=("frustrated", "angry", "calm"),
    )


def shipping_damaged(c: Ctx) -> Draft:
    r = c.r
    item = r.choice(list(HARDWARE))
    other = r.choice([h for h in HARDWARE if h != item])
    order = c.order()
    return draft(
        c,
        [
            V(
                f"The {item} from order {order} arrived today with a cracked casing. The box was dented on one corner, "
                "so it probably happened in transit.",
                (f"Damaged item - order {order}",),
                details=("I took photos of the box and the device before unpacking completely.",),
            ),
            V(
                f"We ordered a {item} (order {order}) but the box contained a {other}.",
                ("Wrong item received", f"Received {other} instead of {item}"),
                asks=("Can you ship the correct item by express and send a label for the wrong one?",),
            ),
            V(
                f"Order {order} arrived incomplete: the {item} is there but the power adapter is missing from the box.",
                ("Missing part in package",),
                asks=("Can you send the missing adapter?",),
            ),
            V(
                f"The {item} from order {order} does not power on at all. We tried two different outlets and the cable "
                "from another unit.",
                (f"{item} dead on arrival",),
                details=(f"Serial number on the back: SN{r.randint(10**7, 10**8 - 1)}.",),
            ),
        ],
        product=item,
        topic="Orders & shipping",
        ref=order,
        subjects=(f"Problem with order {order}",),
        asks=("Please send a replacement and a return label.", "How do I return it?"),
        details=("We need it for the weekend market.",),
        moods=("frustrated", "calm", "angry"),
    )


def refund_request(c: Ctx) -> Draft:
    r = c.r
    item, usd = r.choice(list(HARDWARE.items()))
    order = c.order()
    plan, pusd = c.plan_price()
    return draft(
        c,
        [
            V(
                f"I would like to return the {item} from order {order}. It is unused and still in the original "
                f"packaging; it turns out our shop layout does not need it. I paid {c.money(usd)}.",
                ("Return request", f"Return for order {order}"),
                product=item,
                asks=("Please send a return label.", "How does the return process work?"),
            ),
            V(
                f"We switched to annual billing by mistake on {c.day(r.randint(2, 9))} and were charged "
                f"{c.money(390 if c.tier != 'enterprise' else pusd * 10)}. We meant to stay on monthly billing.",
                ("Charged for annual plan by mistake", "Refund request - wrong billing period"),
                asks=("Can you refund it and put us back on monthly billing?",),
                ref="",
            ),
            V(
                f"We are closing our online shop at the end of the month. Is it possible to get a prorated refund for "
                f"the rest of our {plan} period?",
                ("Prorated refund?", "Refund request"),
                ref="",
            ),
            V(
                f"I returned the {item} (order {order}) on {c.day(r.randint(15, 30))}; {r.choice(CARRIERS)} confirms it "
                "was delivered to your warehouse, but the refund has still not been issued.",
                ("Refund still not received", f"Return {order} - where is my refund?"),
                product=item,
                asks=("Please confirm the refund and when it will arrive.",),
            ),
        ],
        product="Billing & Subscriptions",
        topic="Returns & refunds",
        ref=order,
        asks=("Can you process this?",),
        moods=("calm", "frustrated"),
    )


def praise(c: Ctx) -> Draft:
    r = c.r
    agent = r.choice(AGENTS)
    return draft(
        c,
        [
            V(
                f"I just wanted to say thank you to {agent} from your support team, who stayed on chat with me for "
                "almost an hour last week to fix our shipping rules. Absolutely brilliant service.",
                (f"Great support from {agent}", "Thank you!"),
            ),
            V(
                "We moved our store to Brightcart two months ago and sales are up about 20%. The checkout is so much "
                "smoother than our old platform; customers have even commented on it.",
                ("Just some praise", "Two months in and loving it"),
            ),
            V(
                "The new bulk order printing feature saved our packing team at least an hour a day. Whoever built it "
                "clearly talked to real merchants.",
                ("Loving the new feature", "Bulk printing is a game changer"),
            ),
            V(
                "The POS Terminal T2 arrived a day early, setup took ten minutes, and it worked first time at our "
                "market stall on Saturday. Great product.",
                ("T2 terminal - great experience",),
                product="POS Terminal T2",
            ),
        ],
        product="Brightcart Storefront",
        topic="Feedback / feature request",
        asks=("Thanks again!", "Keep it up!", "Cheers to the whole team."),
        details=(
            "No need to reply, just passing it on.",
            "Please forward this to the team.",
            "If you ever need a reference customer, count us in.",
        ),
        moods=("happy",),
    )


def escalation(c: Ctx) -> Draft:
    r = c.r
    n = r.randint(3, 6)
    ref = f"TCK-{r.randint(1000, 1500):06d}"
    problems = [
        (f"our payouts have been frozen for {r.randint(9, 20)} days", "Brightcart Payments"),
        ("half of our orders from last week were never sent to the warehouse", "Brightcart Storefront"),
        (f"we were charged {c.money(r.randint(400, 3000))} we do not owe", "Billing & Subscriptions"),
        ("our store was suspended without any warning or explanation", "Brightcart Storefront"),
        ("the inventory bug has made us oversell for two weeks", "Inventory Sync"),
    ]
    variants = [
        V(
            f"This is the {n}th time I am contacting you about this (see {ref}) and all I get are "
            f"copy-paste replies. The problem is simple: {problem}.",
            product=product,
        )
        for problem, product in problems
    ]
    return draft(
        c,
        variants,
        product="Brightcart Storefront",
        topic="Complaint",
        subjects=(
            "ESCALATION - still not resolved",
            "Complaint: worst support experience",
            f"Re: {ref} - {n} weeks and no solution",
            "Manager please",
        ),
        asks=(
            "I want to speak to a manager today.",
            f"If this is not resolved by {c.weekday_ahead(2)} we will cancel and move to a competitor.",
            "Escalate this NOW please.",
        ),
        details=(
            "Nobody has called me back although I was promised a callback twice.",
            "Every reply asks me for the same information again.",
            "Your chat agent closed the conversation while I was typing.",
            f"We have been paying customers for {r.randint(2, 7)} years.",
            "I am documenting everything and will post a review of how this was handled.",
        ),
        moods=("angry",),
    )


def gdpr_request(c: Ctx) -> Draft:
    return draft(
        c,
        [
            V(
                "Under Article 17 GDPR I request the deletion of all personal data you hold about me, including my "
                f"account ({c.email}), order history and any marketing lists.",
                ("GDPR data deletion request", "Right to erasure (Art. 17 GDPR)"),
                details=("Please confirm in writing once this has been done.",),
            ),
            V(
                "I am exercising my right of access under Article 15 GDPR. Please send me a copy of all personal data "
                "you process about me, the purposes, the recipients and how long you keep it.",
                ("Request under Article 15 GDPR", "Subject access request"),
                details=("I understand you have one month to respond.",),
            ),
            V(
                f"One of our customers has asked us (the store {c.store}) to delete their data. How do I erase a "
                "customer's personal data from Brightcart, including backups and e-mail campaign lists?",
                ("Delete a customer's data", "How to handle a customer deletion request"),
                asks=("What is your process and timeline?",),
            ),
            V(
                "I never signed up for your newsletter but I keep receiving it. Please remove my e-mail address from "
                "all lists and tell me where you got it from.",
                ("Remove me from your mailing list", "Stop e-mailing me"),
            ),
        ],
        product="Account & Security",
        topic="Privacy / data protection",
        asks=("Thank you for handling this promptly.", "Please confirm receipt of this request."),
        details=("If you need to verify my identity, reply to this address.",),
        moods=("calm", "calm", "frustrated"),
    )


def api_rate_limit(c: Ctx) -> Draft:
    r = c.r
    limit = r.choice([120, 240, 600])
    return draft(
        c,
        [
            V(
                f"Our integration gets 'HTTP 429 Too Many Requests' from /v2/orders even though we stay well below the "
                f"documented {limit} requests per minute. The Retry-After header says 60 seconds every time.",
                ("API 429 errors below the documented limit",),
                details=(f"Example request id: req_{r.getrandbits(48):012x}.",),
            ),
            V(
                f"We sync about {r.randint(20, 90)}k products nightly through the API and keep hitting the rate limit "
                f"({limit} req/min). The job now takes {r.randint(6, 14)} hours instead of one.",
                ("Rate limit too low for product sync",),
                asks=("Is there a bulk export endpoint we should use instead?",),
                details=("Bulk endpoints would solve this for us.",),
            ),
            V(
                "Since last Tuesday the GraphQL endpoint returns 'THROTTLED: cost exceeds available budget' for "
                "queries that used to work. Did the cost calculation change?",
                ("GraphQL throttling changed?",),
            ),
        ],
        product="Brightcart API",
        topic="API / integrations",
        subjects=("API rate limits",),
        asks=("Can you raise our limit or suggest a better approach?", "Please explain the limits."),
        details=(
            "We use the official Python SDK brightcart 2.3.0 with exponential backoff.",
            "We are happy to pay for a higher limit if that is an option.",
        ),
        moods=("calm", "frustrated"),
    )


def integration_question(c: Ctx) -> Draft:
    return draft(
        c,
        [
            V(
                "We are connecting Brightcart to Xero. Should refunds come through as credit notes or as negative "
                "invoices? The connector creates both and our accountant is confused.",
                ("Xero: refunds as what?",),
                product="Marketplace Connector",
            ),
            V(
                "How do we verify webhook signatures? The docs mention the X-Brightcart-Signature header but our "
                "HMAC-SHA256 of the raw body never matches. We use Node 20 and Express.",
                ("Webhook signature verification",),
                asks=("A code example would be great.",),
            ),
            V(
                "Is there a Zapier trigger for 'new customer created'? I only see 'new order' and 'new product'.",
                ("Zapier trigger?",),
            ),
            V(
                "We want to connect our QuickBooks Online account, but the integration page says 'Not available in "
                "your region'. We are based in Canada.",
                ("QuickBooks not available in Canada?",),
            ),
            V(
                "Can the API create draft orders with custom line items (e.g. engraving fees)? POST /v2/draft_orders "
                "returns 422 'line_items[0].product_id is required'.",
                ("API question: draft orders",),
            ),
            V(
                "What is the recommended way to sync customers from our Salesforce into Brightcart? A one-off import of "
                "40k records, then daily updates.",
                ("Syncing customers from CRM",),
            ),
        ],
        product="Brightcart API",
        topic="API / integrations",
        subjects=("Integration question",),
        asks=("Any guidance appreciated.", "Thanks in advance!", "Could you point me to the right docs?"),
        details=(
            "We are a small team with one developer.",
            "The integration needs to be live before our product launch next month.",
        ),
        moods=("calm",),
    )


def security_concern(c: Ctx) -> Draft:
    r = c.r
    city = r.choice(["Lagos", "Bucharest", "Sao Paulo", "Jakarta", "Kyiv", "Manila"])
    return draft(
        c,
        [
            V(
                f"I received a 'new login' e-mail for our account from {city}. Nobody in our team is there. I changed "
                "the password immediately, but I want to know what they accessed.",
                ("Suspicious login",),
                asks=("Please check the access logs for our account.",),
            ),
            V(
                "We got an e-mail that looks like it is from Brightcart asking us to 'verify payout details' via a "
                "link to brightcart-verify.example.com. Is that you? It looks like phishing.",
                ("Phishing e-mail pretending to be Brightcart",),
                asks=("Can you confirm this is not from you?",),
            ),
            V(
                "A staff member who left last month still appears in the activity log yesterday. I removed her account "
                "weeks ago, or at least I thought I did.",
                ("Possible unauthorised access",),
                asks=("Please check the access logs for our account.",),
            ),
        ],
        product="Account & Security",
        topic="Login / account access",
        asks=("What should we do now?",),
        moods=("frustrated", "calm"),
    )


def cancellation(c: Ctx) -> Draft:
    r = c.r
    reason = pick(
        r,
        "we are closing the business",
        "we are moving to another platform",
        "the shop was a seasonal project",
        "it is simply too expensive for us at the moment",
        "we merged with another company that uses a different system",
    )
    return draft(
        c,
        [
            V(
                f"Please cancel our subscription; {reason}. Before that we need a full export of orders and customers.",
                ("Cancel subscription", "Cancellation + data export"),
                asks=("How do we get the export?",),
            ),
            V(
                f"We would like to cancel our plan, {reason}. Can you make sure the domain stays connected until the "
                "end of the month?",
                ("Cancellation request",),
            ),
            V(
                f"Please close our account at the end of this billing period; {reason}.",
                ("Closing our account",),
                asks=("What happens to our data after cancellation?",),
            ),
        ],
        product="Billing & Subscriptions",
        topic="Billing",
        asks=("Please confirm the cancellation date.", "Thank you for the past years."),
        moods=("calm", "calm", "frustrated"),
    )


SCENARIOS: list[tuple[Callable[[Ctx], Draft], int, tuple[str, ...]]] = [
    # (scenario, weight, tiers it fits)
    (billing_double_charge, 9, ("pro", "enterprise")),
    (billing_after_cancel, 8, ("free", "pro")),
    (billing_invoice_details, 7, ("pro", "enterprise")),
    (billing_price_increase, 6, ("pro",)),
    (billing_payment_failed, 6, ("pro", "enterprise")),
    (payouts_delayed, 6, ("free", "pro", "enterprise")),
    (login_2fa, 7, ("free", "pro", "enterprise")),
    (login_password, 6, ("free", "pro")),
    (login_sso, 5, ("enterprise",)),
    (account_ownership, 4, ("free", "pro", "enterprise")),
    (bug_checkout, 10, ("free", "pro", "enterprise")),
    (bug_mobile, 7, ("free", "pro", "enterprise")),
    (bug_inventory, 7, ("pro", "enterprise")),
    (bug_export, 5, ("pro", "enterprise")),
    (bug_campaigns, 4, ("pro", "enterprise")),
    (performance, 5, ("free", "pro", "enterprise")),
    (outage, 3, ("pro", "enterprise")),
    (feature_request, 10, ("free", "pro", "enterprise")),
    (shipping_delay, 10, ("free", "pro", "enterprise")),
    (shipping_damaged, 7, ("free", "pro", "enterprise")),
    (refund_request, 8, ("pro", "enterprise")),
    (praise, 6, ("free", "pro", "enterprise")),
    (escalation, 5, ("pro", "enterprise")),
    (gdpr_request, 6, ("free", "pro", "enterprise")),
    (api_rate_limit, 6, ("pro", "enterprise")),
    (integration_question, 7, ("free", "pro", "enterprise")),
    (security_concern, 4, ("free", "pro", "enterprise")),
    (cancellation, 4, ("pro",)),
]


# --------------------------------------------------------------------------------------------------
# Tone, tier and channel framing (English)
# --------------------------------------------------------------------------------------------------
MOOD_OPENERS = {
    "calm": [
        "",
        "",
        "",
        "Hope you are well.",
        "Quick question for you.",
        "Hope you can help.",
        "I hope this is the right place to ask.",
    ],
    "frustrated": [
        "This is my second {contact} about this.",
        "I have already spent an hour on this, so I would appreciate a quick answer.",
        "Honestly, I am getting pretty frustrated here.",
        "Not the first time I've had to {verb} in.",
        "Sorry, but this is getting ridiculous.",
        "I've been trying to sort this out all morning.",
        "We have been going back and forth on this for too long.",
        "",
    ],
    "angry": [
        "I am extremely disappointed.",
        "This is UNACCEPTABLE.",
        "I've had enough.",
        "Frankly I cannot believe I have to {verb} in about this.",
        "I am furious.",
        "Your service has been a disaster this month.",
    ],
    "happy": ["First of all, we love the product.", "", "Happy customer here!"],
}
MOOD_CLOSERS = {
    "calm": [
        "Thanks for your help.",
        "No huge rush.",
        "Thank you!",
        "",
        "Appreciate it.",
        "Thanks in advance for looking into it.",
    ],
    "frustrated": [
        "Please look into this as soon as possible.",
        "I really need this sorted before the weekend.",
        "A real answer this time would be appreciated.",
        "Please don't just send me a help-centre link.",
        "I'd appreciate an update today.",
        "Please call me if that's faster.",
        "",
    ],
    "angry": [
        "I expect a call back today, not another automated reply.",
        "If I don't hear back today I will take this further.",
        "Do not send me another template answer.",
        "Seriously considering leaving Brightcart over this.",
    ],
    "happy": ["", "Have a great day!"],
}
TIER_LINES = {  # (neutral, when the customer is unhappy)
    "enterprise": (
        ["We are on the Enterprise plan.", "", "We have about 60 seats on Enterprise."],
        [
            "We are on the Enterprise plan and this affects the whole team.",
            "Our contract includes a 4-hour response SLA, please treat this accordingly.",
            "Please loop in our account manager.",
        ],
    ),
    "pro": (
        ["", "", "We are on the Pro plan.", "We have been on Pro for a couple of years."],
        ["", "We are paying for Pro, so I expect better than this.", "We are on the Pro plan."],
    ),
    "free": (
        ["", "I am still on the free plan while I evaluate Brightcart.", "I'm on the free tier for now."],
        [
            "",
            "I know I'm only on the free plan, but this is basic functionality.",
            "I was about to upgrade to Pro, but not like this.",
        ],
    ),
}
GREETINGS = [
    "Hi Brightcart team,",
    "Hello,",
    "Dear Support,",
    "Hi there,",
    "Good morning,",
    "Hey folks,",
    "Dear Brightcart support team,",
    "Hi,",
]
SIGNOFFS = ["Thanks", "Best regards", "Cheers", "Kind regards", "Regards", "Thank you in advance", "Best"]


def background(c: Ctx) -> str:
    """A sentence of context that fits any scenario (who the customer is, what they already tried)."""
    r = c.r
    options = [
        f"We run {r.randint(2, 6)} shops plus the online store, roughly {r.randint(3, 90) * 50} orders a month.",
        f"We have been with Brightcart since {r.randint(2018, 2024)} and never had an issue like this before.",
        "I searched the help centre first but the articles I found describe an older version of the dashboard.",
        f"My colleague {r.choice(FIRST_NAMES)} may also get in touch about this; it is the same issue.",
        "We are a two-person business, so I am doing support, packing and accounts at the same time.",
        "I asked in the community forum but nobody had an answer.",
    ]
    if c.channel != "phone":
        options += [
            "I'm writing from my phone, so apologies for typos.",
            f"Our store is {c.store} in case you need to look it up.",
        ]
    return r.choice(options)


def history(c: Ctx) -> str:
    """What an unhappy customer already went through before this ticket."""
    r = c.r
    return pick(
        r,
        "I reported this via chat the day it started and was told it would be fixed 'within 48 hours'. The "
        "only thing I got since is an automated reply with a help-centre link that has nothing to do with it.",
        "Someone from your team asked for screenshots, which I sent the same day. Since then, silence.",
        "On the phone I was passed between three agents, and each one asked me to repeat my account details "
        "and the whole story from scratch.",
        "I have now lost most of a working day on this, and our customers are the ones paying for it.",
    )


def word_count(text: str) -> int:
    return len(text.split())


def _frame_english(c: Ctx, d: Draft, details: list[str]) -> str:
    r = c.r
    spoken = c.channel == "phone"
    opener = r.choice(MOOD_OPENERS[d.mood]).format(
        contact="call" if spoken else "message", verb="call" if spoken else "write"
    )
    closer = r.choice(MOOD_CLOSERS[d.mood])
    tier_line = r.choice(TIER_LINES[c.tier][d.mood in ("frustrated", "angry")])
    core = " ".join(s for s in [opener, *d.body, tier_line] if s)
    ending = " ".join(s for s in [d.ask, closer] if s)
    if c.channel == "email":
        sig = c.name if r.random() < 0.4 else f"{c.name}\n{c.role}, {c.company}"
        parts = [r.choice(GREETINGS), core, *details, ending, f"{r.choice(SIGNOFFS)},\n{sig}"]
        if r.random() < 0.12:
            parts.append(
                pick(
                    r,
                    "P.S. Please reply by e-mail rather than phone, I'm in meetings all day.",
                    "P.S. The help centre search returns nothing for 'invoice', might be worth a look.",
                    "P.S. Otherwise the new dashboard looks great.",
                    f"P.S. Please also copy my colleague at orders@{ascii_slug(c.company)}.example.com.",
                )
            )
        return "\n\n".join(parts)
    if c.channel == "web_form":
        header = [f"Topic: {d.topic}", f"Store: {c.store}"]
        if d.ref:
            header.append(f"Reference: {d.ref}")
        return "\n".join(header) + "\n\nMessage:\n" + "\n\n".join([core, *details, ending])
    if c.channel == "chat":
        lines = [pick(r, "hi", "hello", "hey", "hi, anyone there?")]
        for chunk in [*d.body, *details[:2], d.ask]:
            lines.append(chunk[0].lower() + chunk[1:] if r.random() < 0.3 else chunk)
        if d.mood in ("angry", "frustrated") and closer:
            lines.append(closer)
        page = r.choice(["/admin/orders", "/admin/settings/billing", "/admin/products", "/help", "/admin"])
        return f"[Chat started from help widget on {page}]\n" + "\n".join(f"> {line}" for line in lines)
    # phone: a voicemail transcription or a callback request, always in the first person
    kind = pick(r, "Voicemail transcription", "Callback request (IVR transcript)")
    filler = pick(r, "Um... ", "Yeah, hi. ", "So. ", "")
    intro = f"Hi, this is {c.first} from {c.company}, the account e-mail is {c.email}."
    outro = pick(
        r,
        "You can call me back on the number on file. Thanks.",
        "Please call me back. Bye.",
        "Call me back when you can, thanks.",
    )
    said = " ".join([intro, filler + core, *details[:1], ending, outro])
    seconds = round(word_count(said) / r.uniform(2.0, 2.8))  # people speak 2-3 words a second
    return f'{kind}, {seconds // 60}m {seconds % 60:02d}s:\n"{said}"'


def compose_english(c: Ctx, d: Draft) -> str:
    """Frame the draft for its channel, dropping optional details to fit MAX_WORDS and adding
    account context to reach MIN_WORDS."""
    details = list(d.details)
    if c.r.random() < 0.45:
        details.insert(0, background(c))
    if d.mood in ("frustrated", "angry") and c.r.random() < 0.5:
        details.insert(0, history(c))
    state = c.r.getstate()  # the same framing choices on every attempt
    text = _frame_english(c, d, details)
    while word_count(text) > MAX_WORDS and details:
        details.pop()
        c.r.setstate(state)
        text = _frame_english(c, d, details)
    fillers = [
        f"Our store is {c.store}, account e-mail {c.email}.",
        f"This started around {c.day(c.r.randint(1, 4))}.",
        "Let me know if you need anything else from me.",
    ]
    while word_count(text) < MIN_WORDS and fillers:
        details.append(fillers.pop(0))
        c.r.setstate(state)
        text = _frame_english(c, d, details)
    return text


# --------------------------------------------------------------------------------------------------
# Tickets in other languages: fully hand-written, with slots for details
# --------------------------------------------------------------------------------------------------
LOCAL_MONTHS = {
    "it": [
        "gennaio",
        "febbraio",
        "marzo",
        "aprile",
        "maggio",
        "giugno",
        "luglio",
        "agosto",
        "settembre",
        "ottobre",
        "novembre",
        "dicembre",
    ],
    "de": [
        "Januar",
        "Februar",
        "März",
        "April",
        "Mai",
        "Juni",
        "Juli",
        "August",
        "September",
        "Oktober",
        "November",
        "Dezember",
    ],
    "fr": [
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ],
    "es": [
        "enero",
        "febrero",
        "marzo",
        "abril",
        "mayo",
        "junio",
        "julio",
        "agosto",
        "septiembre",
        "octubre",
        "noviembre",
        "diciembre",
    ],
}
LOCAL_PEOPLE = {
    "it": (
        ["Giulia", "Marco", "Francesca", "Luca", "Elena", "Davide"],
        ["Bianchi", "Ferraro", "Galli", "Conti", "Esposito", "Rinaldi"],
        ["Ceramiche Valverde", "Bottega Aurora", "Forno Santa Lucia", "Ciclofficina Po"],
    ),
    "de": (
        ["Katrin", "Jonas", "Sabine", "Florian", "Anja", "Matthias"],
        ["Brandt", "Vogel", "Keller", "Hoffmann", "Lorenz", "Schuster"],
        ["Kaffeerösterei Elbblick", "Holzwerk Sommer", "Papeterie Lindenhof", "Radhaus Kiel"],
    ),
    "fr": (
        ["Camille", "Julien", "Élodie", "Antoine", "Manon", "Thibault"],
        ["Lefèvre", "Garnier", "Rousseau", "Fontaine", "Mercier", "Chevalier"],
        ["Atelier Lavande", "Fromagerie du Pont", "Savonnerie Azur", "Librairie des Quais"],
    ),
    "es": (
        ["Lucía", "Javier", "Marta", "Diego", "Carmen", "Pablo"],
        ["García", "Romero", "Navarro", "Ortega", "Molina", "Delgado"],
        ["Cerámica Albaicín", "Café Tres Olivos", "Bicis Ribera", "Taller Marea"],
    ),
}


def local_day(lang: str, c: Ctx, days_ago: int) -> str:
    d = c.created - timedelta(days=days_ago)
    month = LOCAL_MONTHS[lang][d.month - 1]
    return f"{d.day}. {month}" if lang == "de" else f"{d.day} {month}"


def eur(value: float) -> str:
    text = f"{value:,.2f}".replace(",", "X").replace(".", ",").replace("X", ".")
    return text.removesuffix(",00") + " €"


# Each template: (subject, product, channel, text). Slots: {name} {company} {email} {order} {inv}
# {store} {d1} {d2} {amt} {n} {ver} {agent}
LOCAL_TEMPLATES: dict[str, list[tuple[str, str, str, str]]] = {
    "it": [
        (
            "Addebito doppio sull'abbonamento",
            "Billing & Subscriptions",
            "email",
            "Buongiorno,\n\nil {d1} ci sono stati addebitati due volte {amt} per l'abbonamento Pro del negozio "
            "{store}. Nella sezione Fatturazione vedo una sola fattura ({inv}), ma sull'estratto conto della "
            "carta risultano due movimenti identici.\n\nVi chiedo di rimborsare l'importo in eccesso e di "
            "confermarmi quale fattura è quella valida, perché la commercialista me la chiede entro fine "
            "mese.\n\nGrazie e buona giornata,\n{name}\n{company}",
        ),
        (
            "Ordine {order} non ancora arrivato",
            "POS Terminal T2",
            "web_form",
            "Argomento: Ordini e spedizioni\nRiferimento: {order}\n\nMessaggio:\nHo ordinato due POS Terminal "
            'T2 il {d2} con spedizione espressa, ma il tracking è fermo su "Etichetta creata" da una '
            "settimana. Sabato apriamo il secondo punto vendita e senza i terminali non possiamo incassare con "
            "carta. Potete verificare con il magazzino e darmi una data di consegna realistica? Se non "
            "arrivano entro venerdì preferisco annullare l'ordine ed essere rimborsata.",
        ),
        (
            "App Android si chiude da sola",
            "Brightcart Mobile (Android)",
            "chat",
            "[Chat avviata dal widget di assistenza]\n> salve\n> dopo l'aggiornamento alla versione {ver} "
            "l'app Android si chiude appena apro la scheda Ordini\n> ho già provato a reinstallarla e a "
            "svuotare la cache, niente da fare\n> telefono Samsung Galaxy A54 con Android 14\n> in negozio la "
            "usiamo tutto il giorno, c'è un modo per tornare alla versione precedente?",
        ),
        (
            "Richiesta di cancellazione dei dati (art. 17 GDPR)",
            "Account & Security",
            "email",
            "Spettabile Brightcart,\n\nai sensi dell'articolo 17 del Regolamento UE 2016/679 chiedo la "
            "cancellazione di tutti i dati personali che mi riguardano, compreso l'account registrato con "
            "l'indirizzo {email}, lo storico degli ordini e l'iscrizione alle vostre newsletter.\n\nVi prego "
            "di confermarmi per iscritto l'avvenuta cancellazione entro i termini previsti dalla "
            "normativa.\n\nCordiali saluti,\n{name}",
        ),
        (
            "Complimenti al supporto",
            "Brightcart Storefront",
            "email",
            "Ciao a tutti,\n\nvolevo solo ringraziare {agent} del vostro supporto: la settimana scorsa è "
            "rimasto in chat con me quasi un'ora per sistemare le regole di spedizione verso le isole. Da "
            "quando siamo passati a Brightcart le vendite online sono cresciute e il checkout è molto più "
            "semplice per i nostri clienti.\n\nNon serve risposta, continuate così!\n{name}, {company}",
        ),
        (
            "Errore 429 sulle API",
            "Brightcart API",
            "web_form",
            "Argomento: API e integrazioni\n\nMessaggio:\nLa nostra integrazione con il gestionale riceve "
            'continuamente "HTTP 429 Too Many Requests" dall\'endpoint /v2/orders, anche se restiamo sotto '
            "il limite documentato di 120 richieste al minuto. La sincronizzazione notturna di circa {n} "
            "prodotti ora dura tutta la notte. Esiste un endpoint di esportazione massiva oppure è possibile "
            "aumentare il limite? Siamo disposti a pagare un piano superiore.",
        ),
    ],
    "de": [
        (
            "Rechnung ohne USt-IdNr.",
            "Billing & Subscriptions",
            "email",
            "Guten Tag,\n\nauf unserer Rechnung {inv} fehlt unsere Umsatzsteuer-Identifikationsnummer, "
            "obwohl sie seit Monaten unter Einstellungen > Abrechnung hinterlegt ist. Unser Steuerberater "
            "kann die Vorsteuer so nicht geltend machen. Das betrifft übrigens alle Rechnungen seit "
            "{d2}.\n\nKönnten Sie die Rechnungen bitte korrigiert neu ausstellen?\n\nMit freundlichen "
            "Grüßen\n{name}\n{company}",
        ),
        (
            "Zahlung abgelehnt, Shop gesperrt?",
            "Billing & Subscriptions",
            "phone",
            'Rückrufbitte (Sprachnachricht, 1m 12s):\n"Ja, hallo, hier ist {name} von {company}. Unsere '
            "Verlängerung ist fehlgeschlagen, im Admin steht 'ERR_PAYMENT_DECLINED (code 51)', und jetzt "
            "zeigt der Shop den Kunden eine Warnung wegen offener Zahlung. Die Karte funktioniert überall "
            "sonst, die Bank sieht keinen Versuch von Ihnen. Können wir per Überweisung zahlen? Bitte rufen "
            'Sie mich zurück, die Nummer ist hinterlegt. Danke."',
        ),
        (
            "Lagerbestand wird nicht mit Amazon synchronisiert",
            "Inventory Sync",
            "email",
            "Hallo Brightcart-Team,\n\nseit dem {d1} werden unsere Lagerbestände nicht mehr zu Amazon "
            "übertragen. Artikel KAF-{n}-M steht bei Ihnen auf 0, bei Amazon aber weiterhin auf 14 "
            "verfügbar, wir verkaufen also Ware, die wir nicht haben. Im Sync-Protokoll steht nur "
            '"completed". Ein manuelles "Jetzt synchronisieren" ändert nichts.\n\nWir mussten schon '
            "mehrere Bestellungen stornieren und unsere Verkäuferbewertung leidet. Bitte prüfen Sie das "
            "dringend.\n\nViele Grüße\n{name}",
        ),
        (
            "Etikettendrucker defekt geliefert",
            "Label Printer LP-40",
            "web_form",
            "Thema: Bestellungen & Versand\nReferenz: {order}\n\nNachricht:\nDer Label Printer LP-40 aus "
            "Bestellung {order} ist heute angekommen, lässt sich aber nicht einschalten. Wir haben zwei "
            "Steckdosen und das Netzteil eines anderen Geräts ausprobiert. Der Karton war an einer Ecke "
            "eingedrückt. Bitte schicken Sie uns ein Ersatzgerät und ein Rücksendeetikett, wir brauchen "
            "den Drucker für den Versand vor dem Wochenende.",
        ),
        (
            "Kündigung und Datenexport",
            "Billing & Subscriptions",
            "email",
            "Sehr geehrte Damen und Herren,\n\nhiermit kündigen wir unser Abonnement zum Ende der "
            "laufenden Abrechnungsperiode, da wir unseren Onlineshop schließen. Vorher benötigen wir einen "
            "vollständigen Export aller Bestellungen und Kundendaten für die gesetzliche Aufbewahrung.\n\n"
            "Bitte bestätigen Sie uns das Kündigungsdatum schriftlich und teilen Sie uns mit, wie lange die "
            "Daten nach der Kündigung noch abrufbar sind.\n\nMit freundlichen Grüßen\n{name}, {company}",
        ),
        (
            "Funktionswunsch: Teillieferungen",
            "Brightcart Storefront",
            "chat",
            "[Chat über das Hilfe-Widget gestartet]\n> hallo\n> kleine Anregung: wenn ein Artikel einer "
            "Bestellung nicht lieferbar ist, würden wir gern den Rest schon verschicken und später eine "
            "zweite Sendungsnummer nachreichen\n> im Moment müssen wir die Bestellung jedes Mal von Hand "
            "aufteilen, bei ca. {n} Bestellungen im Monat nervt das\n> ist so etwas geplant?",
        ),
    ],
    "fr": [
        (
            "Remboursement non reçu",
            "Card Reader R1",
            "email",
            "Bonjour,\n\nJ'ai renvoyé le lecteur de carte R1 de la commande {order} le {d2}. Le transporteur "
            "confirme la livraison à votre entrepôt, mais je n'ai toujours pas reçu le remboursement de "
            "{amt}.\n\nPourriez-vous vérifier où en est le dossier et me dire quand le remboursement sera "
            "effectué ? Cela fait maintenant plus de trois semaines.\n\nCordialement,\n{name}\n{company}",
        ),
        (
            "Impossible de me connecter (double authentification)",
            "Account & Security",
            "chat",
            "[Chat démarré depuis le widget d'aide]\n> bonjour\n> j'ai changé de téléphone et je n'ai pas "
            "transféré l'application d'authentification\n> maintenant chaque connexion me demande un code à "
            "6 chiffres que je ne peux pas générer\n> je suis la seule administratrice du compte {company}\n"
            "> comment puis-je prouver mon identité pour réinitialiser la 2FA ?",
        ),
        (
            "Le paiement échoue au checkout",
            "Brightcart Storefront",
            "web_form",
            "Sujet : Problème technique\nBoutique : {store}\n\nMessage :\nDepuis le {d1}, nos clients ne "
            "peuvent plus finaliser leur commande quand un code promo est appliqué. La page affiche "
            '"Something went wrong. Please try again." sans autre détail. Étapes : ajouter un article au '
            'panier, appliquer le code PRINTEMPS10, cliquer sur "Commander". Sans code promo, tout '
            "fonctionne. Nous avons perdu une vingtaine de commandes. Merci de corriger cela en urgence.",
        ),
        (
            "Hausse de prix inacceptable",
            "Billing & Subscriptions",
            "email",
            "Bonjour,\n\nNous venons d'apprendre que notre abonnement passe de 39 € à 59 € par mois, avec "
            "un mois de préavis seulement. Nous sommes clients depuis quatre ans et rien n'a changé pour nous "
            "dans le produit. Pour une petite boutique comme la nôtre, c'est énorme.\n\nExiste-t-il une "
            "formule annuelle ou une offre pour les petits commerces qui nous permettrait de garder l'ancien "
            "tarif ? Sinon, nous étudierons sérieusement d'autres solutions.\n\n{name}",
        ),
        (
            "Demande d'accès à mes données (RGPD)",
            "Account & Security",
            "email",
            "Madame, Monsieur,\n\nConformément à l'article 15 du RGPD, je vous demande de me communiquer "
            "une copie de l'ensemble des données personnelles me concernant que vous traitez, ainsi que les "
            "finalités du traitement, les destinataires et la durée de conservation. Mon compte est associé "
            "à l'adresse {email}.\n\nJe vous remercie de bien vouloir accuser réception de cette "
            "demande.\n\nBien cordialement,\n{name}",
        ),
    ],
    "es": [
        (
            "Pedido {order} retrasado",
            "Receipt Printer RP-80",
            "email",
            "Hola,\n\nEl {d2} pedí dos impresoras de tickets RP-80 (pedido {order}) con envío urgente y el "
            'seguimiento sigue en "Etiqueta creada" desde hace una semana. Abrimos una nueva tienda el '
            "lunes y las necesitamos instaladas antes.\n\n¿Podéis comprobar con el almacén dónde está el "
            "paquete? Si no puede llegar esta semana, prefiero cancelar el pedido y que me devolváis el "
            "dinero.\n\nGracias,\n{name}\n{company}",
        ),
        (
            "Cobro después de cancelar",
            "Billing & Subscriptions",
            "web_form",
            "Tema: Facturación\nReferencia: {inv}\n\nMensaje:\nCancelé nuestra suscripción el {d2} (tengo el "
            "correo de confirmación) y aun así hoy nos habéis cobrado {amt}. Nadie de nuestro equipo ha "
            "entrado en la cuenta desde entonces. Quiero el reembolso completo y una confirmación por "
            "escrito de que la suscripción está cancelada de verdad.",
        ),
        (
            "Pregunta sobre webhooks",
            "Brightcart API",
            "email",
            "Hola equipo de Brightcart,\n\nEstamos integrando vuestros webhooks con nuestro ERP y no "
            "conseguimos validar la firma: el HMAC-SHA256 que calculamos sobre el cuerpo de la petición "
            "nunca coincide con la cabecera X-Brightcart-Signature. Usamos Node 20 con Express.\n\n¿Hay que "
            "calcularlo sobre el cuerpo sin parsear? Un ejemplo de código nos ayudaría mucho, somos un "
            "equipo pequeño con un solo desarrollador.\n\nUn saludo,\n{name}",
        ),
        (
            "¡Muy contentos con el TPV!",
            "POS Terminal T2",
            "chat",
            "[Chat iniciado desde el widget de ayuda]\n> hola!\n> solo quería deciros que el terminal T2 "
            "llegó un día antes de lo previsto\n> lo configuramos en diez minutos y el sábado funcionó "
            "perfecto en el mercadillo\n> muchas gracias también a {agent}, que nos ayudó con la "
            "configuración de impuestos",
        ),
        (
            "Cargo duplicado y nadie responde",
            "Brightcart Payments",
            "phone",
            'Transcripción de buzón de voz, 1m 48s:\n"Hola, soy {name} de {company}. Es la tercera vez que '
            "llamo. Nos habéis retenido los pagos de la tienda durante más de diez días, el panel solo dice "
            "'En revisión' y nadie nos explica qué se está revisando. Necesitamos ese dinero para pagar a "
            'los proveedores. Quiero hablar hoy mismo con un responsable, por favor. Gracias."',
        ),
    ],
}


def compose_local(
    r: random.Random, lang: str, created: datetime, template: tuple[str, str, str, str], tier: str
) -> dict:
    first_names, last_names, companies = LOCAL_PEOPLE[lang]
    first, last = r.choice(first_names), r.choice(last_names)
    c = Ctx(r, created, tier, template[2], first, last, r.choice(companies), "", "€", 0)
    slots = {
        "name": c.name,
        "company": c.company,
        "email": c.email,
        "store": c.store,
        "order": c.order(),
        "inv": c.invoice(),
        "d1": local_day(lang, c, r.randint(2, 6)),
        "d2": local_day(lang, c, r.randint(20, 40)),
        "amt": eur(r.choice([39, 49, 59.9, 79, 390])),
        "n": r.randint(120, 480),
        "ver": r.choice(["4.12.1", "4.13.0", "5.0.2"]),
        "agent": r.choice(AGENTS),
    }
    subject, product, channel, text = template
    return {"channel": channel, "product": product, "subject": subject.format(**slots), "text": text.format(**slots)}


# --------------------------------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------------------------------
def random_timestamp(r: random.Random) -> datetime:
    span_days = (END - START).days
    while True:
        day = START + timedelta(days=r.randrange(span_days))
        if day.weekday() < 5 or r.random() < 0.35:  # fewer tickets at weekends
            break
    hour = min(23, max(0, int(r.gauss(13, 4))))
    return day.replace(hour=hour, minute=r.randrange(60), second=r.randrange(60))


def english_ticket(r: random.Random) -> dict:
    created = random_timestamp(r)
    tier = r.choices(["free", "pro", "enterprise"], weights=[38, 44, 18])[0]
    fitting = [(fn, w) for fn, w, tiers in SCENARIOS if tier in tiers]
    scenario = r.choices([fn for fn, _ in fitting], weights=[w for _, w in fitting])[0]
    channel = r.choices(["email", "chat", "web_form", "phone"], weights=[42, 24, 24, 10])[0]
    c = Ctx(
        r,
        created,
        tier,
        channel,
        r.choice(FIRST_NAMES),
        r.choice(LAST_NAMES),
        r.choice(COMPANIES),
        r.choice(ROLES),
        r.choices(["$", "€", "£"], weights=[60, 25, 15])[0],
        r.randrange(4),
    )
    draft = scenario(c)
    if draft.mood == "calm" and r.random() < 0.15:
        draft.mood = "frustrated"
    text = compose_english(c, draft)
    return {
        "created_at": created,
        "channel": channel,
        "customer_tier": tier,
        "product": draft.product,
        "language": "en",
        "subject": draft.subject,
        "text": text,
    }


def local_tickets(r: random.Random) -> list[dict]:
    out = []
    for lang, templates in LOCAL_TEMPLATES.items():
        for template in templates:
            created = random_timestamp(r)
            tier = r.choices(["free", "pro", "enterprise"], weights=[35, 50, 15])[0]
            ticket = compose_local(r, lang, created, template, tier)
            out.append({"created_at": created, "customer_tier": tier, "language": lang, **ticket})
    return out


def generate(seed: int = SEED) -> list[dict]:
    r = random.Random(seed)
    tickets = [english_ticket(r) for _ in range(N_ENGLISH)] + local_tickets(r)
    tickets.sort(key=lambda t: t["created_at"])
    next_id = 1000 + r.randrange(400)
    rows = []
    for t in tickets:
        words = word_count(t["text"])
        if not MIN_WORDS <= words <= MAX_WORDS:
            raise ValueError(f"ticket has {words} words, outside [{MIN_WORDS}, {MAX_WORDS}]: {t['subject']}")
        rows.append(
            {
                "id": f"TCK-{next_id:06d}",
                "created_at": t["created_at"].strftime("%Y-%m-%dT%H:%M:%SZ"),
                "channel": t["channel"],
                "customer_tier": t["customer_tier"],
                "product": t["product"],
                "language": t["language"],
                "subject": t["subject"],
                "text": t["text"],
            }
        )
        next_id += r.randint(1, 37)  # other tickets (not in the sample) took the ids in between
    return rows


def write(rows: list[dict], path: Path = OUT_FILE) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def stats(rows: list[dict]) -> str:
    words = [word_count(r["text"]) for r in rows]
    lines = [f"tickets: {len(rows)}", f"words: min {min(words)}, avg {sum(words) / len(words):.1f}, max {max(words)}"]
    for key in ("language", "channel", "customer_tier", "product"):
        counts = Counter(r[key] for r in rows).most_common()
        lines.append(f"{key}: " + ", ".join(f"{k}={v}" for k, v in counts))
    lines.append(f"distinct texts: {len({r['text'] for r in rows})}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_FILE, help="where to write the JSON Lines file")
    parser.add_argument("--stats", action="store_true", help="print a summary of the generated corpus")
    args = parser.parse_args()
    rows = generate()
    write(rows, args.out)
    print(f"wrote {len(rows)} tickets to {args.out}")
    if args.stats:
        print(stats(rows))


if __name__ == "__main__":
    main()
