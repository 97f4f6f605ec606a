#!/usr/bin/env python3
"""Deterministic generator for the bundled "ticket triage" example datasets.

Stdlib only. Re-running produces byte-identical files.

    python3 specs/data/make_ticket_triage.py

Writes (relative to this file's directory):
    ticket_triage/train.jsonl              600 chat examples  (messages: user, assistant)
    ticket_triage/val.jsonl                 60 chat examples  (held out, disjoint texts)
    ticket_triage/prompt_completion.jsonl  200 prompt/completion examples
    ticket_triage_prefs/train.jsonl        400 DPO preference pairs
    ticket_triage_prefs/val.jsonl           40 DPO preference pairs (held out)
    ticket_triage_kto/train.jsonl          800 KTO unpaired examples (the train pairs, unpaired)
    ticket_triage_kto/val.jsonl             80 KTO unpaired examples (the held-out pairs, unpaired)

Every user ticket text is unique across the first five files; the KTO files reuse the pairs' tickets.
"""

import json
import os
import random

SEED = 1234
HERE = os.path.dirname(os.path.abspath(__file__))

CATEGORIES = ["billing", "account", "bug", "shipping", "feature_request", "security"]
PRIORITIES = ["low", "medium", "high", "urgent"]
SENTIMENTS = ["negative", "neutral", "positive"]

# --------------------------------------------------------------------------
# slot vocabularies
# --------------------------------------------------------------------------
APPS = ["Nimbus Notes", "PixelPad", "Ledgerly", "TrackFit", "CloudVault", "Tasklane",
        "Brightdesk", "Orbit CRM", "SnapInvoice", "StreamBox", "Chatterly", "Mapleweb"]
STORES = ["Homely", "GearNest", "Kitchenly", "UrbanCart", "the store", "your shop"]
PLATFORMS = ["iPhone", "Android phone", "iPad", "Mac", "Windows laptop", "Chromebook"]
PLANS = ["Basic", "Pro", "Team", "Business", "Premium", "Family"]
AMOUNTS = ["$9.99", "$19.99", "$49", "$120", "€29", "£15", "$240", "$89.50", "$4.99",
           "€12", "$299", "£60"]
TIMES = ["yesterday", "this morning", "last night", "two days ago", "since Monday",
         "earlier today", "over the weekend", "last week"]
DAYS = ["3 days", "5 days", "a week", "10 days", "two weeks", "over a week"]
ITEMS = ["blender", "standing desk", "phone case", "coffee grinder", "yoga mat",
         "desk lamp", "backpack", "smartwatch", "kettle", "keyboard", "air fryer",
         "office chair", "water bottle", "webcam", "electric toothbrush", "rice cooker"]
CARRIERS = ["UPS", "FedEx", "DHL", "USPS", "Royal Mail", "the courier"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
COUNTRIES = ["Brazil", "Vietnam", "Russia", "Nigeria", "Germany", "Canada", "Indonesia",
             "Romania", "Mexico", "Poland"]
FOREIGN_CITIES = ["Lagos", "Moscow", "Jakarta", "Bucharest", "Manila", "Lima", "Hanoi",
                  "Minsk"]
HOME_CITIES = ["Chicago", "Leeds", "Toronto", "Melbourne", "Dublin", "Austin", "Denver",
               "Glasgow"]
NAMES = ["Maria", "Tom", "Priya", "Jonas", "Aisha", "Kenji", "Lucas", "Sofia", "Daniel",
         "Emma", "Omar", "Chloe", "Mateo", "Hannah", "Raj", "Lena", "Sam", "Nora"]
MAIL_DOMAINS = ["gmail.com", "outlook.com", "yahoo.com", "proton.me", "fastmail.com"]
PHISH_DOMAINS = ["secure-login-verify.net", "account-check.co", "support-update.info",
                 "verify-billing.xyz"]
ERRORS = ["error 500", "a 502 Bad Gateway", "a blank white screen", "'Something went wrong'",
          "error code E-4012", "a 503 error"]
BUTTONS = ["Save", "Share", "Settings", "Export", "Back", "Send", "Upload", "Delete"]
PROMOS = ["SPRING20", "WELCOME10", "SAVE15", "BLACKFRIDAY", "STUDENT25"]
ACTIONS = [("export a report", "exporting reports"), ("upload a photo", "uploading photos"),
           ("open a project", "opening projects"), ("save my changes", "saving changes"),
           ("attach a file", "attaching files"), ("print an invoice", "printing invoices"),
           ("log a workout", "logging workouts"), ("start a video call", "starting video calls"),
           ("share a document", "sharing documents"), ("search my notes", "searching notes")]
FEATURES = [("dark mode", "dark mode"), ("an option to export to CSV", "csv export"),
            ("calendar sync with Outlook", "outlook calendar sync"),
            ("more keyboard shortcuts", "more keyboard shortcuts"),
            ("bulk editing", "bulk editing"), ("an offline mode", "offline mode"),
            ("a Linux desktop app", "linux desktop app"), ("shared folders", "shared folders"),
            ("recurring invoices", "recurring invoices"), ("custom tags", "custom tags"),
            ("a public API for reports", "public reporting api"),
            ("a home screen widget", "home screen widget"),
            ("a Slack integration", "slack integration"),
            ("a way to restore deleted items", "restore for deleted items"),
            ("support for multiple currencies", "multiple currency support"),
            ("a Spanish translation", "spanish translation")]
VULNS = [("your password reset links never expire", "password reset links never expire"),
         ("the profile API returns other users' email addresses",
          "api leaking user email addresses"),
         ("I can view other customers' invoices by changing the ID in the URL",
          "invoice ids expose other customers"),
         ("the login form has no rate limiting at all", "no rate limiting on login"),
         ("session tokens stay valid after logout", "sessions stay valid after logout"),
         ("file uploads accept HTML that runs scripts", "stored xss via file uploads")]

# --------------------------------------------------------------------------
# intents: category, base priority, tone weights (neg, neu, pos), whether an
# urgency cue bumps the priority, and (ticket text, summary) variants.
# --------------------------------------------------------------------------
INTENTS = [
    # ---------------- billing ----------------
    dict(category="billing", priority="medium", tones=(5, 4, 1), bump=True, variants=[
        ("I was charged twice for my {plan} plan this month, {amount} each time.",
         "double charge for {plan_l} plan"),
        ("My card was billed {amount} two times for {app} {time}.",
         "charged twice for {app_l} subscription"),
        ("There are two identical charges of {amount} from {app} on my statement.",
         "duplicate {amount} charge on statement"),
        ("Looks like you double charged me for the {plan} subscription. I only have one account.",
         "double charge on single account"),
    ]),
    dict(category="billing", priority="medium", tones=(5, 4, 1), bump=True, variants=[
        ("I cancelled my {app} subscription {time} but was still charged {amount}. I'd like a refund.",
         "refund for charge after cancellation"),
        ("Please refund the {amount} renewal charge, I cancelled before the renewal date.",
         "refund request for {amount} renewal"),
        ("I forgot to cancel my free trial of {app} and got charged {amount}. Can I get that refunded? I never used it.",
         "refund for unused trial charge"),
        ("I downgraded from {plan} to the free plan {time} and was still billed {amount}. Please refund the difference.",
         "billed after downgrading to free plan"),
    ]),
    dict(category="billing", priority="medium", tones=(5, 4, 1), bump=True, shop=True, variants=[
        ("I returned the {item} {days} ago and still haven't received my refund of {amount}.",
         "refund missing for returned {item}"),
        ("You received my return for order {order} but the refund of {amount} never showed up on my card.",
         "refund not received for returned order"),
        ("I sent back the {item} because it didn't fit my space. When will I get my money back?",
         "refund status for returned {item}"),
    ]),
    dict(category="billing", priority="low", tones=(0, 6, 4), bump=True, variants=[
        ("Where can I download invoices for my {app} account? Our accountant needs the {month} one.",
         "download {month_l} invoice for accountant"),
        ("Could you add our company VAT number to future invoices?",
         "add vat number to invoices"),
        ("Can I get a receipt for my {amount} payment from {time}? I need it for expenses.",
         "receipt needed for expense report"),
        ("How do I change the billing address that shows on my invoices?",
         "change billing address on invoices"),
        ("Is it possible to switch from monthly to annual billing on the {plan} plan?",
         "switch {plan_l} plan to annual billing"),
    ]),
    dict(category="billing", priority="medium", tones=(4, 5, 1), bump=True, variants=[
        ("My card keeps getting declined when I try to upgrade to {plan}, but it works everywhere else.",
         "card declined during {plan_l} upgrade"),
        ("Payment fails with {error} at checkout every time I try to renew.",
         "payment failing at renewal checkout"),
        ("I updated my credit card but {app} still says my payment method is invalid.",
         "updated card rejected as invalid"),
        ("My renewal was {amount} but the pricing page lists the {plan} plan for less. Why was I charged more?",
         "renewal charged above listed price"),
        ("I was promised a discount for annual billing but it wasn't applied to my {month} invoice.",
         "annual discount missing from invoice"),
        ("The promo code {promo} was accepted but my total didn't change.",
         "promo code not applied to total"),
    ]),
    # ---------------- account ----------------
    dict(category="account", priority="medium", tones=(5, 4, 1), bump=True, variants=[
        ("I can't log into {app} on my {platform}. It says my password is wrong but I just reset it.",
         "cannot log in after password reset"),
        ("Login just spins forever on my {platform} and never lets me in.",
         "login stuck loading on {platform_l}"),
        ("Every time I sign in to {app} with Google it sends me back to the login page.",
         "google sign in redirect loop"),
        ("I keep getting 'invalid credentials' even though I'm using the right email and password.",
         "invalid credentials error with correct password"),
    ]),
    dict(category="account", priority="medium", tones=(4, 5, 1), bump=True, variants=[
        ("The password reset email never arrives. I checked spam too.",
         "password reset email not arriving"),
        ("I requested a reset link three times {time} and got nothing at {email}.",
         "no password reset link received"),
        ("The verification email for my new {app} account never came, so I can't finish signing up.",
         "verification email never received"),
        ("My account got locked after too many login attempts and the unlock link has expired.",
         "account locked with expired unlock link"),
        ("I lost my phone and can't get my two-factor codes, so I'm locked out of {app}.",
         "locked out after losing 2fa phone"),
        ("My {app} account says 'suspended' and I don't know why. I haven't broken any rules.",
         "account suspended without explanation"),
    ]),
    dict(category="account", priority="low", tones=(1, 6, 3), bump=False, variants=[
        ("How do I change the email address on my {app} account? I'm moving to a work address.",
         "change account email address"),
        ("Can I change my username? I made a typo when I signed up.",
         "change username due to typo"),
        ("I want to update the phone number linked to my {app} account but the field is greyed out.",
         "update phone number on account"),
        ("How do I transfer ownership of our {app} workspace to a colleague?",
         "transfer workspace ownership to colleague"),
        ("Please delete my {app} account and all the data associated with it.",
         "request to delete account"),
        ("I'd like to close my account. I don't use {app} anymore.",
         "close unused account"),
        ("I accidentally created two {app} accounts with different emails. Can you merge them?",
         "merge two duplicate accounts"),
    ]),
    # ---------------- bug ----------------
    dict(category="bug", priority="high", tones=(6, 4, 0), bump=True, variants=[
        ("{app} crashes every time I try to {action} on my {platform}. I can't get any work done.",
         "app crashes when {action_ing}"),
        ("The app closes instantly when I {action}. It started {time} after the update.",
         "crash when {action_ing} after update"),
        ("Whenever I {action}, {app} freezes and then shuts down. This is blocking my whole workflow.",
         "freeze and crash when {action_ing}"),
        ("{app} won't even open on my {platform} anymore, it crashes on the splash screen.",
         "app crashes on startup"),
    ]),
    dict(category="bug", priority="urgent", tones=(7, 3, 0), bump=True, variants=[
        ("Nobody on our team can access {app}, every page shows {error}. Our whole company is blocked.",
         "service outage blocking entire team"),
        ("All my data in {app} disappeared after the update {time}. Years of work, gone.",
         "all data lost after update"),
        ("The {app} API has been returning {error} for every request {time} and our production system is down.",
         "api errors taking production down"),
        ("Our shared workspace in {app} is empty for everyone since {time}. {count} people can't work.",
         "shared workspace data missing for everyone"),
    ]),
    dict(category="bug", priority="low", tones=(1, 5, 4), bump=False, variants=[
        ("Small thing: the {button} button overlaps the text on my {platform}.",
         "{button_l} button overlaps text"),
        ("There's a typo on the {app} settings page, it says 'Notifcations'.",
         "typo on settings page"),
        ("Dark mode makes the date labels almost invisible on my {platform}. Not a big deal, just thought you should know.",
         "date labels unreadable in dark mode"),
        ("The profile picture looks stretched on the {app} account page.",
         "stretched profile picture on account page"),
        ("Emoji in task titles show up as little boxes in the {app} sidebar.",
         "emoji render as boxes in sidebar"),
    ]),
    dict(category="bug", priority="medium", tones=(5, 4, 1), bump=True, variants=[
        ("{app} has been really slow {time}, pages take 20+ seconds to load.",
         "slow page loads in {app_l}"),
        ("Syncing in {app} takes forever now, even for small files. It used to be instant.",
         "very slow file syncing"),
        ("The {app} app drains my {platform} battery and gets hot after a few minutes of use.",
         "app draining battery and overheating"),
        ("Search in {app} takes almost a minute to return results since {time}.",
         "search results extremely slow"),
        ("Changes I make in {app} on my {platform} don't show up on my {platform2}.",
         "changes not syncing between devices"),
        ("Notifications from {app} stopped working on my {platform} {time}, even though they're enabled.",
         "notifications stopped working on {platform_l}"),
        ("CSV files exported from {app} have all the dates shifted by one day.",
         "csv export dates off by one"),
        ("The {button} button does nothing when I click it in the {app} web app.",
         "{button_l} button unresponsive in web app"),
    ]),
    # ---------------- shipping ----------------
    dict(category="shipping", priority="medium", tones=(5, 4, 1), bump=True, shop=True, variants=[
        ("My order {order} was supposed to arrive {days} ago and the tracking hasn't updated since.",
         "order delayed with no tracking updates"),
        ("It's been {days} and my {item} still hasn't shipped.",
         "{item} not shipped yet"),
        ("Tracking for order {order} has said 'in transit' with {carrier} for {days}.",
         "package stuck in transit with {carrier_l}"),
    ]),
    dict(category="shipping", priority="medium", tones=(5, 4, 1), bump=True, shop=True, variants=[
        ("The {item} I ordered arrived damaged, the box was completely crushed.",
         "{item} arrived damaged"),
        ("My {item} came with a cracked part and doesn't work.",
         "{item} delivered broken"),
        ("Order {order} arrived but half the items were broken.",
         "order arrived with broken items"),
        ("I ordered {a_item} but received {a_item2} instead.",
         "received {item2} instead of {item}"),
        ("Order {order} was missing the {item}, only the other items were in the box.",
         "{item} missing from order"),
        ("I got a package with my address on the label but the contents aren't what I ordered.",
         "received package with wrong contents"),
    ]),
    dict(category="shipping", priority="low", tones=(0, 6, 4), bump=True, shop=True, variants=[
        ("Can you tell me when order {order} will ship? No rush, just planning ahead.",
         "question about order ship date"),
        ("Is there a tracking number for my {item} order yet?",
         "tracking number request for {item}"),
        ("Do you ship to {country}? I'd like to order {a_item}.",
         "question about shipping to {country_l}"),
        ("Can I change the delivery address for order {order}? It hasn't shipped yet.",
         "change delivery address before shipping"),
    ]),
    dict(category="shipping", priority="high", tones=(6, 4, 0), bump=True, shop=True, variants=[
        ("Tracking says my {item} was delivered {time} but it's not here and my neighbours don't have it.",
         "package marked delivered but missing"),
        ("{carrier} says order {order} was lost in transit. What happens now?",
         "order lost in transit by {carrier_l}"),
        ("My package was returned to sender and I need the {item} for an event this weekend.",
         "package returned to sender before event"),
    ]),
    # ---------------- feature_request ----------------
    dict(category="feature_request", priority="low", tones=(0, 4, 6), bump=False, variants=[
        ("It would be great if {app} had {feature}.",
         "request for {feature_s}"),
        ("Any plans to add {feature} to {app}? It would save me a lot of time.",
         "add {feature_s} to {app_l}"),
        ("Feature idea: {feature}. I'd happily pay a bit more for it.",
         "feature idea for {feature_s}"),
        ("Could you consider adding {feature} to the {app} mobile app?",
         "add {feature_s} to mobile app"),
        ("Suggestion for the roadmap: {feature} in {app}. My whole team would use it.",
         "roadmap suggestion for {feature_s}"),
    ]),
    dict(category="feature_request", priority="low", tones=(7, 3, 0), bump=False, variants=[
        ("Why doesn't {app} have {feature} yet? Pretty much every competitor does.",
         "wants {feature_s} like competitors"),
        ("I've been asking for {feature} in {app} for a year now. Is it ever coming?",
         "repeated request for {feature_s}"),
    ]),
    # ---------------- security ----------------
    dict(category="security", priority="urgent", tones=(7, 3, 0), bump=True, variants=[
        ("Someone logged into my {app} account from {country} and changed my password. It wasn't me.",
         "account takeover from {country_l}"),
        ("My {app} account email was changed to an address I don't recognise and I can't get back in.",
         "account hijacked with email changed"),
        ("There are purchases of {amount} on my {app} account that I didn't make and my password no longer works.",
         "unauthorized purchases on compromised account"),
        ("I think I've been hacked. My {app} account is sending messages to my contacts that I never wrote.",
         "hacked account sending messages"),
    ]),
    dict(category="security", priority="high", tones=(4, 5, 1), bump=True, variants=[
        ("I got an email claiming to be from {app} asking me to confirm my password at {phish}. Is this legit?",
         "phishing email impersonating {app_l}"),
        ("Just got a text saying my {app} account will be closed unless I click a link. Looks like a scam.",
         "phishing sms about account closure"),
        ("Someone called me pretending to be {app} support and asked for my 2FA code.",
         "phone scam asking for 2fa code"),
        ("I got a login alert from {city} but I'm at home in {city2}. Should I be worried?",
         "suspicious login alert from {city_l}"),
        ("There's an active session on my {app} account from a device I don't own.",
         "unknown device session on account"),
        ("I'm getting dozens of {app} 2FA codes I didn't request {time}.",
         "unrequested 2fa codes received"),
    ]),
    dict(category="security", priority="high", tones=(2, 5, 3), bump=True, variants=[
        ("I'm a security researcher and found that {vuln}. Happy to share details privately.",
         "{vuln_s}"),
        ("While testing {app} I noticed {vuln}. You should probably fix that.",
         "{vuln_s}"),
        ("Responsible disclosure for {app}: {vuln}.",
         "{vuln_s}"),
        ("I received an order confirmation email with someone else's name, address and phone number.",
         "received another customer's personal data"),
        ("When I log into {app} I can see another company's projects in my dashboard.",
         "seeing another company's private data"),
        ("Your public status page is showing customer email addresses.",
         "customer emails exposed on status page"),
    ]),
]

GREETINGS = ["", "", "", "Hi.", "Hello!", "Hey team!", "Hi support team.", "Good morning!", "Hi there!"]
NEG_OPEN = ["I'm really frustrated.", "This is getting ridiculous.", "Not happy at all.",
            "Seriously annoyed right now.", "Honestly, this is unacceptable.",
            "Third time contacting you about this!", "I'm so fed up."]
NEG_CLOSE = ["Very disappointed with {brand}.", "This is unacceptable.",
             "Fix this please, I'm losing patience.", "Seriously considering cancelling over this.",
             "Terrible experience so far.", "Really angry about this.",
             "Worst support experience I've had."]
POS_OPEN = ["Love {brand}, been using it for years!", "Big fan of {brand}!",
            "Hope you're having a great day!", "First of all, great product!",
            "You guys have been awesome so far."]
POS_CLOSE = ["Thanks so much, you guys are great!", "Really appreciate your help :)",
             "Keep up the great work!", "Thanks in advance, love the service!",
             "You're the best, thank you!"]
NEU_CLOSE = ["", "", "", "Thanks.", "Thank you.", "Regards, {name}", "- {name}", "Let me know.",
             "Thanks, {name}"]
URGENCY = ["This is urgent.", "Please help ASAP.", "I need this sorted today, we have a deadline.",
           "Please escalate, it's time sensitive.", "I need this sorted before Friday.",
           "Urgent please!"]
DETAILS = {
    "billing": ["I'm on the {plan} plan.", "My account email is {email}.",
                "My customer ID is {username}.", "I've been a customer since {month}."],
    "account": ["My username is {username}.", "I'm using {app} on my {platform}.",
                "I already tried clearing my cache.", "My account email is {email}."],
    "bug": ["I'm on version {ver}.", "I already tried reinstalling.", "Restarting doesn't help.",
            "This happens on my {platform}."],
    "shipping": ["Order number is {order}.", "I paid for express shipping.",
                 "I ordered it on {date}.", "My email is {email}."],
    "feature_request": ["I use {app} every day for work.", "Our team of {count} would use this daily.",
                        "I'm on the {plan} plan."],
    "security": ["My account email is {email}.", "I have screenshots if you need them.",
                 "I've already changed my passwords elsewhere."],
}


def article(noun):
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def make_slots(rng, shop):
    app = rng.choice(APPS)
    item, item2 = rng.sample(ITEMS, 2)
    plat, plat2 = rng.sample(PLATFORMS, 2)
    action, action_ing = rng.choice(ACTIONS)
    feature, feature_s = rng.choice(FEATURES)
    vuln, vuln_s = rng.choice(VULNS)
    name = rng.choice(NAMES)
    country = rng.choice(COUNTRIES)
    city = rng.choice(FOREIGN_CITIES)
    carrier = rng.choice(CARRIERS)
    plan = rng.choice(PLANS)
    month = rng.choice(MONTHS)
    button = rng.choice(BUTTONS)
    return dict(
        app=app, app_l=app.lower(), brand=rng.choice(STORES) if shop else app,
        item=item, item2=item2, a_item=article(item), a_item2=article(item2),
        platform=plat, platform2=plat2, platform_l=plat.lower(),
        action=action, action_ing=action_ing, feature=feature, feature_s=feature_s,
        vuln=vuln, vuln_s=vuln_s, name=name, country=country, country_l=country.lower(),
        city=city, city_l=city.lower(), city2=rng.choice(HOME_CITIES),
        carrier=carrier, carrier_l=carrier.lower(), plan=plan, plan_l=plan.lower(),
        month=month, month_l=month.lower(), button=button, button_l=button.lower(),
        amount=rng.choice(AMOUNTS), time=rng.choice(TIMES), days=rng.choice(DAYS),
        order="#%d" % rng.randint(10000, 999999), error=rng.choice(ERRORS),
        promo=rng.choice(PROMOS), phish=rng.choice(PHISH_DOMAINS),
        count=rng.choice(["5", "12", "30", "40", "200"]),
        email="%s%d@%s" % (name.lower(), rng.randint(1, 99), rng.choice(MAIL_DOMAINS)),
        username="%s_%d" % (name.lower(), rng.randint(10, 999)),
        ver="%d.%d.%d" % (rng.randint(2, 7), rng.randint(0, 12), rng.randint(0, 9)),
        date="%s %d" % (month, rng.randint(1, 28)),
    )


def apply_typos(text, rng):
    """Introduce 1-2 realistic typos (deterministic given rng state)."""
    for _ in range(rng.randint(1, 2)):
        op = rng.randrange(5)
        if op == 0:
            text = text.lower()
        elif op == 1:
            text = text.replace("'", "")
        elif op == 2:
            text = text.replace("I ", "i ").replace("I'm", "im")
        else:
            words = text.split(" ")
            idx = [i for i, w in enumerate(words) if w.isalpha() and len(w) >= 5]
            if not idx:
                continue
            i = rng.choice(idx)
            w = words[i]
            j = rng.randrange(1, len(w) - 2)
            if op == 3:   # swap two adjacent letters
                w = w[:j] + w[j + 1] + w[j] + w[j + 2:]
            else:         # drop a letter
                w = w[:j] + w[j + 1:]
            words[i] = w
            text = " ".join(words)
    return text


def bump(priority):
    return PRIORITIES[min(PRIORITIES.index(priority) + 1, len(PRIORITIES) - 1)]


def make_example(rng, category):
    intents = [it for it in INTENTS if it["category"] == category]
    intent = rng.choice(intents)
    text_t, summary_t = rng.choice(intent["variants"])
    slots = make_slots(rng, intent.get("shop", False))
    sentiment = rng.choices(SENTIMENTS, weights=intent["tones"])[0]
    priority = intent["priority"]

    parts = [text_t.format(**slots)]
    extras = []
    if rng.random() < 0.45:
        extras.append(rng.choice(DETAILS[category]).format(**slots))
    if intent["bump"] and rng.random() < 0.2:
        extras.append(rng.choice(URGENCY))
        priority = bump(priority)

    opener = closer = ""
    if sentiment == "negative":
        if rng.random() < 0.5:
            opener = rng.choice(NEG_OPEN)
        else:
            closer = rng.choice(NEG_CLOSE).format(**slots)
    elif sentiment == "positive":
        if rng.random() < 0.5:
            opener = rng.choice(POS_OPEN).format(**slots)
        else:
            closer = rng.choice(POS_CLOSE)
    else:
        closer = rng.choice(NEU_CLOSE).format(**slots)

    greeting = rng.choice(GREETINGS)
    pieces = [greeting, opener] + parts + extras + [closer]
    text = " ".join(p for p in pieces if p)
    if rng.random() < 0.15:
        text = apply_typos(text, rng)

    label = {"category": category, "priority": priority, "sentiment": sentiment,
             "summary": summary_t.format(**slots).lower()}
    return text, label


def answer(label):
    return json.dumps(label, separators=(", ", ": "), ensure_ascii=False)


def balanced_categories(rng, n):
    cats = [CATEGORIES[i % len(CATEGORIES)] for i in range(n)]
    rng.shuffle(cats)
    return cats


def generate(rng, n, seen):
    out = []
    for cat in balanced_categories(rng, n):
        while True:
            text, label = make_example(rng, cat)
            if text not in seen:
                seen.add(text)
                out.append((text, label))
                break
    return out


# --------------------------------------------------------------------------
# rejected answers for preference data
# --------------------------------------------------------------------------
CHATTY = [
    "Thanks for reaching out! It sounds like you're dealing with a {cat_h} issue. I'd rate this as {priority} priority, and our team will look into it shortly.",
    "I'm sorry to hear about this! Based on your message, this ticket is about {summary}. I would classify it as {cat_h} with {priority} priority, and the customer seems {sentiment}.",
    "Sure! Here's my analysis of the ticket:\n\n- Category: {cat_h}\n- Priority: {priority}\n- Sentiment: {sentiment}\n- Summary: {summary}",
    "This looks like a {cat_h} ticket. Summary: {summary}. Priority: {priority}.",
    "Hi there, thank you for contacting support. We're sorry for the inconvenience and will investigate your issue as soon as possible. Best regards, the Support Team",
    "Great question! Triage result: the category is {cat_h}, the priority is {priority}, and the tone of the message is {sentiment}. Let me know if you need anything else!",
]


def make_rejected(rng, label):
    kind = rng.choice(["chatty", "fenced", "wrong_category", "missing_keys", "preamble",
                       "wrong_priority", "pretty"])
    good = answer(label)
    if kind == "chatty":
        return rng.choice(CHATTY).format(cat_h=label["category"].replace("_", " "), **{
            k: v for k, v in label.items() if k != "category"})
    if kind == "fenced":
        return rng.choice(["```json\n%s\n```", "```\n%s\n```"]) % good
    if kind == "preamble":
        return rng.choice(["Here is the triage for this ticket:\n%s",
                           "Sure! %s",
                           "%s\n\nLet me know if you'd like me to draft a reply to the customer."]) % good
    if kind == "pretty":
        return json.dumps(label, indent=2, ensure_ascii=False)
    bad = dict(label)
    if kind == "wrong_category":
        bad["category"] = rng.choice([c for c in CATEGORIES if c != label["category"]])
    elif kind == "wrong_priority":
        bad["priority"] = rng.choice([p for p in PRIORITIES if p != label["priority"]])
    else:  # missing_keys
        drop = rng.sample(["priority", "sentiment", "summary"], rng.randint(1, 2))
        bad = {k: v for k, v in label.items() if k not in drop}
    return answer(bad)


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main():
    seen = set()

    # chat SFT data
    rng = random.Random(SEED)
    train = generate(rng, 600, seen)
    val = generate(rng, 60, seen)
    chat = lambda t, l: {"messages": [{"role": "user", "content": t},
                                      {"role": "assistant", "content": answer(l)}]}
    write_jsonl(os.path.join(HERE, "ticket_triage", "train.jsonl"), [chat(t, l) for t, l in train])
    write_jsonl(os.path.join(HERE, "ticket_triage", "val.jsonl"), [chat(t, l) for t, l in val])

    # prompt/completion data
    rng = random.Random(SEED + 1)
    pc = generate(rng, 200, seen)
    write_jsonl(os.path.join(HERE, "ticket_triage", "prompt_completion.jsonl"),
                [{"prompt": "Ticket: %s\nTriage:" % t, "completion": " " + answer(l)} for t, l in pc])

    # preference (DPO) data
    rng = random.Random(SEED + 2)
    pairs = {}
    for split, n in (("train", 400), ("val", 40)):
        rows = []
        for t, l in generate(rng, n, seen):
            chosen = answer(l)
            rejected = make_rejected(rng, l)
            assert rejected != chosen
            rows.append({"prompt": [{"role": "user", "content": t}],
                         "chosen": [{"role": "assistant", "content": chosen}],
                         "rejected": [{"role": "assistant", "content": rejected}]})
        write_jsonl(os.path.join(HERE, "ticket_triage_prefs", split + ".jsonl"), rows)
        pairs[split] = rows

    # unpaired (KTO) data: each pair unpaired, its chosen answer desirable and its rejected one not, shuffled
    # by a seed of its own (the files above never depend on it)
    rng = random.Random(SEED + 3)
    for split in ("train", "val"):
        rows = []
        for pair in pairs[split]:
            rows.append({"prompt": pair["prompt"], "completion": pair["chosen"], "label": True})
            rows.append({"prompt": pair["prompt"], "completion": pair["rejected"], "label": False})
        rng.shuffle(rows)
        write_jsonl(os.path.join(HERE, "ticket_triage_kto", split + ".jsonl"), rows)


if __name__ == "__main__":
    main()
