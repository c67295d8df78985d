"""A deterministic generator of a synthetic CRM: organizations, leads, monthly sales and interactions.

Pure and fast: no database access and no I/O; every random draw comes from numpy Generators derived
from the ``seed`` argument, so the same arguments always give identical frames. The generating
process (what drives conversion, sales and sentiment) is documented in ``docs/synthetic-data.md``.

The four parts use independent random streams (``SeedSequence(seed).spawn``): changing
``leads_per_org`` does not change the organizations or their sales, and changing ``months`` does not
change which profile an organization has.
"""

from __future__ import annotations

import datetime as dt
import math
import string
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "BUDGET_SIGNALS",
    "CHANNELS",
    "DEFAULT_END_MONTH",
    "INDUSTRIES",
    "PRODUCT_INTERESTS",
    "REGIONS",
    "SALES_PROFILES",
    "SENIORITIES",
    "SENTIMENT_LABELS",
    "SOURCES",
    "TIMELINES",
    "UNKNOWN_OUTCOME_DAYS",
    "SyntheticCRM",
    "generate_crm",
]

DEFAULT_END_MONTH = dt.date(2026, 10, 1)

# --------------------------------------------------------------------------------------------------
# Category sets (a Great Expectations suite and the lead model use them)
# --------------------------------------------------------------------------------------------------

INDUSTRIES: tuple[str, ...] = (
    "software",
    "fintech",
    "healthcare",
    "manufacturing",
    "retail",
    "logistics",
    "professional_services",
    "real_estate",
    "media",
    "education",
    "nonprofit",
    "government",
)
SENIORITIES: tuple[str, ...] = ("c_level", "vp", "director", "manager", "individual_contributor")
TIMELINES: tuple[str, ...] = ("immediate", "this_quarter", "this_year", "no_timeline")
BUDGET_SIGNALS: tuple[str, ...] = ("approved", "allocated", "exploring", "none")
SOURCES: tuple[str, ...] = (
    "referral",
    "partner",
    "webinar",
    "organic_search",
    "paid_search",
    "trade_show",
    "cold_outbound",
)
REGIONS: tuple[str, ...] = ("north_america", "europe", "apac", "latam", "mea")
CHANNELS: tuple[str, ...] = ("email", "call", "meeting", "chat", "support_ticket", "note")
SENTIMENT_LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
SALES_PROFILES: tuple[str, ...] = ("easy", "medium", "hard", "short", "intermittent", "empty")
# the custom attribute carried in ``leads.attributes["product_interest"]``
PRODUCT_INTERESTS: tuple[str, ...] = ("analytics", "automation", "integrations", "support")

# --------------------------------------------------------------------------------------------------
# Lead model: prevalences and true logit effects (documented in docs/synthetic-data.md)
# --------------------------------------------------------------------------------------------------

_INDUSTRY_P = np.array([0.16, 0.09, 0.10, 0.10, 0.10, 0.07, 0.09, 0.06, 0.06, 0.07, 0.05, 0.05])
_INDUSTRY_EFFECT = np.array([1.4, 1.6, 0.5, -0.4, -1.2, 0.3, 0.8, -0.7, -0.1, -1.6, -2.2, -1.3])
# median revenue per employee (USD) by industry
_INDUSTRY_RPE = np.array([260e3, 320e3, 150e3, 210e3, 140e3, 180e3, 170e3, 230e3, 160e3, 80e3, 60e3, 110e3])

_SENIORITY_P = np.array([0.07, 0.11, 0.20, 0.30, 0.32])
_SENIORITY_EFFECT = np.array([0.7, 1.4, 1.1, 0.0, -1.6])

_TIMELINE_P = np.array([0.14, 0.24, 0.30, 0.32])
_TIMELINE_EFFECT = np.array([1.1, 0.7, 0.0, -1.2])
_BUDGET_P = np.array([0.14, 0.20, 0.36, 0.30])
_BUDGET_EFFECT = np.array([1.0, 0.6, 0.0, -1.1])
# interaction timeline x budget (rows: TIMELINES, columns: BUDGET_SIGNALS)
_URGENCY_INTERACTION = np.array(
    [
        [1.6, 0.8, 0.0, -1.8],  # immediate: only with money behind it
        [0.6, 0.4, 0.0, -0.7],
        [0.0, 0.0, 0.0, 0.0],
        [-1.0, -0.5, 0.0, -0.5],  # no timeline: an approved budget is often stale
    ]
)

_SOURCE_P = np.array([0.10, 0.08, 0.12, 0.24, 0.20, 0.10, 0.16])
_SOURCE_EFFECT = np.array([0.45, 0.25, 0.10, 0.05, -0.10, 0.0, -0.40])
_REGION_P = np.array([0.42, 0.30, 0.14, 0.09, 0.05])
_REGION_EFFECT = np.array([0.10, 0.0, -0.10, -0.15, -0.20])
_PRODUCT_INTEREST_P = np.array([0.30, 0.30, 0.25, 0.15])
_PRODUCT_INTEREST_EFFECT = np.array([0.7, 0.3, 0.0, -0.8])

# text intent of the description: strong buying signal, weak buying signal, no signal, disinterest
_INTENT_P = np.array([0.14, 0.24, 0.40, 0.22])
_INTENT_EFFECT = np.array([2.0, 0.8, 0.0, -2.2])

_LEAD_INTERCEPT = -1.9
_ORG_EFFECT_SD = 0.2
_LEAD_NOISE_SD = 0.35
UNKNOWN_OUTCOME_DAYS = 45
_LEAD_COUNT_SD = 0.4  # log-scale spread of an organization's lead volume

_DEPARTMENTS = np.array(
    [
        "Sales",
        "Marketing",
        "Operations",
        "Revenue Operations",
        "IT",
        "Customer Success",
        "Finance",
        "Business Development",
    ],
    dtype=object,
)
_TITLES_BY_SENIORITY: tuple[tuple[str, ...], ...] = (
    (
        "Chief Executive Officer",
        "Chief Revenue Officer",
        "Chief Marketing Officer",
        "Chief Operating Officer",
        "Chief Financial Officer",
        "Founder & CEO",
        "CEO",
        "CTO",
    ),
    ("VP of {dept}", "Vice President, {dept}", "SVP {dept}", "VP {dept}"),
    ("Director of {dept}", "{dept} Director", "Head of {dept}", "Senior Director, {dept}"),
    ("{dept} Manager", "Manager, {dept}", "Senior {dept} Manager", "Team Lead, {dept}"),
    (
        "{dept} Specialist",
        "{dept} Analyst",
        "{dept} Coordinator",
        "Account Executive",
        "Sales Development Representative",
        "{dept} Associate",
        "Intern",
    ),
)

# description sentences per text intent (index as _INTENT_P)
_DESCRIPTION_SENTENCES: tuple[tuple[str, ...], ...] = (
    (
        "Asked for a quote for {n} seats.",
        "Wants a contract draft before {month}.",
        "Legal already started reviewing our MSA.",
        "Requested pricing for the {plan} plan and an implementation timeline.",
        "Their current contract ends in {month} and they are ready to switch.",
        "Asked for customer references to get the deal signed.",
        "Our champion is pushing internally to sign this quarter.",
        "Procurement sent over their vendor onboarding forms.",
        "Wants to start onboarding {n} users as soon as the contract is signed.",
        "Asked whether we can match the quote from {competitor}.",
    ),
    (
        "Interested in a demo of {feature}.",
        "Comparing a few vendors; we are on the shortlist.",
        "Asked for a case study from their industry.",
        "Attended the {feature} webinar and asked detailed questions.",
        "Wants to see how {feature} fits their workflow.",
        "Started a trial and invited {k} colleagues.",
        "Asked for a follow-up call with their team lead.",
        "Requested a product tour focused on {feature}.",
    ),
    (
        "Downloaded the {feature} whitepaper.",
        "Filled in the contact form on the website.",
        "Met at a trade show booth.",
        "Currently tracks the pipeline in spreadsheets.",
        "Their reps use {tool} for follow-ups.",
        "Subscribed to the newsletter.",
        "Team of about {k} people in {dept}.",
        "Uses {tool} today.",
        "Read the blog post on {feature}.",
        "Connected on LinkedIn after the {month} event.",
    ),
    (
        "Not interested right now, maybe next year.",
        "Just researching for a school project.",
        "Said the price is too high for their budget.",
        "Happy with their current vendor, {competitor}.",
        "Asked to be removed from the mailing list.",
        "No budget this year and no plans to change tools.",
        "Student looking for free tools.",
        "Only wanted the free template, not a buyer.",
        "Unsubscribed after the second email.",
        "Signed a three-year deal with {competitor} last month.",
    ),
)

# --------------------------------------------------------------------------------------------------
# Interaction texts: opening + body (label specific) + closing, with slot fillers
# --------------------------------------------------------------------------------------------------

_OPENINGS = (
    "",
    "",
    "",
    "Hi team,",
    "Hello {name},",
    "Quick update:",
    "Following up on our last meeting.",
    "Per our conversation,",
    "Thanks for the call today.",
    "Update from {rep}.",
    "Good morning,",
    "FYI:",
    "Note from {weekday}:",
    "Spoke with {name}.",
    "Call summary:",
)
_CLOSINGS = (
    "",
    "",
    "",
    "Best regards.",
    "Let me know if you have questions.",
    "Will follow up next week.",
    "Talk soon.",
    "Cheers.",
    "Thanks!",
    "Regards, {rep}.",
    "Next step: check in on {weekday}.",
    "Logged by {rep}.",
)
# index as SENTIMENT_LABELS
_BODIES: tuple[tuple[str, ...], ...] = (
    (  # negative
        "{name} wants to cancel the subscription at renewal.",
        "They are at risk of churn after the {feature} outage.",
        "Asked us to escalate the {feature} ticket to management.",
        "{name} is not happy with the {feature} module.",
        "The {feature} training wasn't helpful for the team.",
        "Still waiting on a fix for {feature}, third week now.",
        "They are moving to {competitor} next quarter.",
        "The invoice was wrong again and {name} is frustrated.",
        "Onboarding was great, but {feature} keeps breaking.",
        "Love the interface, but the {feature} exports are unusable.",
        "Downgrading to the {plan} plan to cut costs.",
        "Requested a refund for {n} unused seats.",
        "The {feature} sync dropped records again.",
        "{name} threatened to cancel if the {feature} bug is not fixed.",
        "Usage of {feature} dropped to almost zero.",
        "Renewal is unlikely, budget moved to {competitor}.",
        "{name} says {feature} is slower than their old tool.",
        "Nobody on their team logs in anymore.",
        "They did not renew the {plan} plan.",
        "Third escalation this month about {feature}.",
        "{name} called the {feature} rollout a waste of time.",
        "They won't expand until {feature} is stable.",
        "Support never replied to {name} about {feature}.",
        "Seats cut from {n} to {k}.",
        "{name} is very disappointed with {feature}.",
        "The {feature} experience has been terrible.",
        "{name} is angry about the repeated downtime.",
        "Complained that {feature} is confusing and slow.",
        "Bad experience with the {feature} migration.",
        "{name} hates the new {feature} layout.",
    ),
    (  # neutral
        "Sent the pricing sheet to {name}.",
        "Scheduled a demo for {weekday} at {time}.",
        "Shared the {feature} documentation.",
        "Call moved to {weekday} at {time}.",
        "{name} asked for the security questionnaire.",
        "Updated the contact details for {name}.",
        "Left a voicemail, will try again {weekday}.",
        "Forwarded the contract to legal for review.",
        "Logged the {feature} configuration request.",
        "Sent the meeting notes and next steps.",
        "Renewal date is in {month}; nothing else discussed.",
        "Asked how to cancel a scheduled report in {feature}.",
        "Walked {name} through the upgrade options for the {plan} plan.",
        "Explained how escalation rules work in {feature}.",
        "No problem with the {feature} setup so far, routine check-in.",
        "{name} will be out of office until {weekday}.",
        "Added {k} users to the workspace.",
        "Requested an invoice copy for {month}.",
        "Confirmed the billing address.",
        "Shared the {feature} API keys with their admin.",
        "Moved the quarterly review to {month}.",
        "Asked about data retention for {feature}.",
        "Exported the churn report for their analyst.",
        "Introduced {name} to the account manager.",
    ),
    (  # positive
        "{name} says {feature} is a killer feature for their team.",
        "They want to upgrade to the {plan} plan next month.",
        "Renewal confirmed for another {k} years.",
        "Signed the contract for {n} seats.",
        "Really happy with how the {feature} rollout went.",
        "{name} said the {feature} dashboard saves them hours every week.",
        "The team loves the new {feature} reports.",
        "Adoption of {feature} is way up since onboarding.",
        "Expanding to {n} more seats after the pilot.",
        "Support fixed the {feature} issue fast and {name} was impressed.",
        "No complaints at all about {feature}.",
        "{name} called {feature} a game changer.",
        "The pilot beat their targets; rolling out company-wide.",
        "{name} is excited about the {feature} roadmap.",
        "They crushed their quarterly numbers using {feature}.",
        "The rollout had hiccups, but {name} is now happy with {feature}.",
        "Churn on their side dropped since they started using {feature}.",
        "Asked to add {feature} to the renewal, ready to sign.",
        "{name} offered to be a reference customer.",
        "They upgraded all {n} seats to {plan}.",
        "Escalations went down to zero after {feature} went live.",
        "{name} wants to present the {feature} results to their board.",
        "Renewed early and added {k} seats.",
        "Their reps stopped complaining about data entry.",
        "{name} loves the {feature} module.",
        "Excellent feedback on {feature} from the whole team.",
        "Great call, they are thrilled with the results.",
        "{name} says our support has been fantastic.",
        "Very pleased with the {feature} rollout.",
        "{name} is glad they switched, {feature} works perfectly.",
    ),
)
_FIRST_NAMES = (
    "Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam",
    "Maya", "Noah", "Olga", "Pedro", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wei", "Xavier",
    "Yara", "Zoe", "Marco", "Priya", "Lukas", "Aisha",
)  # fmt: skip
_REPS = ("Alex", "Jordan", "Casey", "Morgan", "Riley", "Taylor", "Jamie", "Robin")
_FEATURES = (
    "reporting", "pipeline", "forecasting", "email sync", "calendar sync", "lead scoring", "dashboard",
    "mobile app", "API", "workflow automation", "import", "billing", "permissions", "analytics",
    "quote builder", "territory management",
)  # fmt: skip
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
_MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)  # fmt: skip
_PLANS = ("Starter", "Growth", "Pro", "Enterprise")
_COMPETITORS = ("Salesloop", "DealForge", "Pipewise", "CRMly", "a cheaper competitor", "an in-house tool")
_TOOLS = ("spreadsheets", "a legacy CRM", "email folders", "a shared inbox", "sticky notes", "Salesloop")
_TIMES = ("9am", "10am", "11am", "1pm", "2pm", "3pm", "4pm")

# per label: probability of each channel (index as CHANNELS)
_CHANNEL_P = np.array(
    [
        [0.25, 0.20, 0.10, 0.10, 0.30, 0.05],  # negative: support tickets
        [0.30, 0.15, 0.10, 0.10, 0.05, 0.30],  # neutral: notes
        [0.30, 0.20, 0.25, 0.10, 0.05, 0.10],  # positive: meetings
    ]
)
_SENTIMENT_P = np.array([0.30, 0.35, 0.35])
_LABEL_NOISE = 0.05

# --------------------------------------------------------------------------------------------------
# Organizations and sales
# --------------------------------------------------------------------------------------------------

_PROFILE_SHARES = np.array([0.40, 0.30, 0.15, 0.10, 0.03, 0.02])
_AI_ENABLED_P = 0.95
_SHORT_MIN, _SHORT_MAX = 12, 20
_NAME_FIRST = (
    "Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Vandelay", "Soylent", "Tyrell",
    "Cyberdyne", "Gringotts", "Oscorp", "Aperture", "Wonka", "Duff", "Monarch", "Nakatomi", "Massive",
    "Blue Sun",
)  # fmt: skip
_NAME_SECOND = (
    "Analytics", "Systems", "Labs", "Industries", "Logistics", "Health", "Capital", "Retail", "Media",
    "Partners", "Software", "Dynamics", "Solutions", "Works", "Group",
)  # fmt: skip

_FORMATTER = string.Formatter()
_NS_PER_DAY = 86_400 * 1_000_000_000
_NS_PER_SECOND = 1_000_000_000


@dataclass(frozen=True)
class SyntheticCRM:
    """The generated CRM; ``org_index`` (0..n_orgs-1) links the frames to ``organizations``."""

    organizations: pd.DataFrame
    leads: pd.DataFrame
    monthly_sales: pd.DataFrame
    interactions: pd.DataFrame


def generate_crm(
    n_orgs: int,
    months: int,
    seed: int,
    *,
    end_month: dt.date = DEFAULT_END_MONTH,
    leads_per_org: int = 40,
    interactions_per_lead: float = 0.8,
) -> SyntheticCRM:
    """Generate ``n_orgs`` organizations with ``months`` months of history ending with ``end_month``.

    The window runs from the first day of the month ``months - 1`` months before ``end_month`` to the
    end of ``end_month``'s month (only its year and month are used). Leads created in the last
    ``UNKNOWN_OUTCOME_DAYS`` days of the window have an unknown outcome (``converted`` is ``<NA>``).
    """
    n_orgs = _check_int("n_orgs", n_orgs, minimum=1)
    months = _check_int("months", months, minimum=1)
    seed = _check_int("seed", seed, minimum=0)
    leads_per_org = _check_int("leads_per_org", leads_per_org, minimum=0)
    if isinstance(interactions_per_lead, bool) or not isinstance(interactions_per_lead, (int, float)):
        raise ValueError(f"interactions_per_lead must be a number, got {interactions_per_lead!r}")
    if not math.isfinite(interactions_per_lead) or interactions_per_lead < 0:
        raise ValueError(f"interactions_per_lead must be a finite number >= 0, got {interactions_per_lead!r}")
    if not isinstance(end_month, dt.date):
        raise ValueError(f"end_month must be a datetime.date, got {end_month!r}")
    if end_month.year < 1900 or (end_month.year, end_month.month) > (2200, 12):
        raise ValueError(f"end_month must lie between 1900 and 2200, got {end_month!r}")
    end_ordinal = end_month.year * 12 + end_month.month - 1
    if end_ordinal - (months - 1) < 1900 * 12:
        raise ValueError(f"months={months} reaches back before 1900 from end_month={end_month}")

    org_ss, lead_ss, sales_ss, inter_ss = np.random.SeedSequence(seed).spawn(4)
    month_starts = [_month_date(end_ordinal - months + 1 + i) for i in range(months + 1)]
    window_start = pd.Timestamp(month_starts[0], tz="UTC")
    window_end = pd.Timestamp(month_starts[-1], tz="UTC")  # exclusive

    organizations = _organizations(np.random.default_rng(org_ss), n_orgs)
    leads = _leads(np.random.default_rng(lead_ss), n_orgs, leads_per_org, window_start, window_end)
    monthly_sales = _monthly_sales(
        np.random.default_rng(sales_ss),
        organizations["sales_profile"].to_numpy(dtype=object),
        month_starts[:-1],
        first_calendar_month=(end_ordinal - months + 1) % 12,
    )
    interactions = _interactions(np.random.default_rng(inter_ss), leads, interactions_per_lead, window_end)
    return SyntheticCRM(
        organizations=organizations, leads=leads, monthly_sales=monthly_sales, interactions=interactions
    )


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _month_date(ordinal: int) -> dt.date:
    return dt.date(ordinal // 12, ordinal % 12 + 1, 1)


def _largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    raw = shares / shares.sum() * total
    counts = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return np.asarray(counts, dtype=np.int64)


def _fill(templates: np.ndarray, idx: np.ndarray, **slots: np.ndarray) -> list[str]:
    """Fill ``templates[idx[i]]`` with row i of every slot array it names (unused slots are ignored).

    Rows are grouped by template, so the per-row work is one ``str.format`` on plain Python values.
    """
    out = np.empty(idx.size, dtype=object)
    order = np.argsort(idx, kind="stable")
    bounds = np.flatnonzero(np.diff(idx[order])) + 1
    for rows in np.split(order, bounds):
        if rows.size == 0:
            continue
        template = str(templates[idx[rows[0]]])
        fields = list(dict.fromkeys(f for _, f, _, _ in _FORMATTER.parse(template) if f))
        if not fields:
            out[rows] = template
            continue
        columns = [np.asarray(slots[f])[rows].tolist() for f in fields]
        out[rows] = [
            template.format_map(dict(zip(fields, values, strict=True)))
            for values in zip(*columns, strict=True)
        ]
    return list(out)


def _timestamps(ns: np.ndarray) -> pd.Series:
    """int64 nanoseconds since the epoch (``NaT`` for the int64 minimum) as a UTC datetime Series."""
    return pd.Series(pd.to_datetime(ns.astype("datetime64[ns]"), utc=True))


def _choice(rng: np.random.Generator, p: np.ndarray, size: int) -> np.ndarray:
    return rng.choice(len(p), size=size, p=p / p.sum())


def _organizations(rng: np.random.Generator, n_orgs: int) -> pd.DataFrame:
    counts = _largest_remainder(_PROFILE_SHARES, n_orgs)
    profiles = rng.permutation(np.repeat(np.array(SALES_PROFILES, dtype=object), counts))
    width = max(4, len(str(n_orgs)))
    first = rng.integers(0, len(_NAME_FIRST), n_orgs)
    second = rng.integers(0, len(_NAME_SECOND), n_orgs)
    names = [
        f"{_NAME_FIRST[a]} {_NAME_SECOND[b]} {i + 1:0{width}d}"
        for i, (a, b) in enumerate(zip(first, second, strict=True))
    ]
    return pd.DataFrame(
        {
            "org_index": np.arange(n_orgs, dtype=np.int64),
            "name": names,
            "sales_profile": pd.Series(profiles, dtype=str),
            "ai_enabled": rng.random(n_orgs) < _AI_ENABLED_P,
        }
    )


# --------------------------------------------------------------------------------------------------
# leads
# --------------------------------------------------------------------------------------------------


def _size_effect(employees: np.ndarray) -> np.ndarray:
    """Mid-size companies (about 100-3,000 employees) convert best; the very small and very large worst."""
    x = np.log10(employees)
    return np.asarray(2.6 * np.exp(-(((x - 2.7) / 0.75) ** 2)) - 1.3, dtype=np.float64)


def _leads(
    rng: np.random.Generator,
    n_orgs: int,
    leads_per_org: int,
    window_start: pd.Timestamp,
    window_end: pd.Timestamp,
) -> pd.DataFrame:
    volume = rng.lognormal(-0.5 * _LEAD_COUNT_SD**2, _LEAD_COUNT_SD, n_orgs)
    counts = rng.poisson(leads_per_org * volume) if leads_per_org > 0 else np.zeros(n_orgs, np.int64)
    org = np.repeat(np.arange(n_orgs, dtype=np.int64), counts)
    n = int(org.size)
    org_effect = rng.normal(0.0, _ORG_EFFECT_SD, n_orgs)[org]

    # created_at: uniform over the window, whole seconds
    start_ns, end_ns = window_start.value, window_end.value
    created_ns = start_ns + (rng.random(n) * (end_ns - start_ns)).astype(np.int64)
    created_ns -= created_ns % _NS_PER_SECOND
    order = np.lexsort((created_ns, org))
    org, created_ns, org_effect = org[order], created_ns[order], org_effect[order]

    # 1. industry
    industry = _choice(rng, _INDUSTRY_P, n)
    # 2. company size: lognormal employees, revenue = employees x revenue per employee x noise
    employees = np.clip(np.round(rng.lognormal(np.log(150.0), 1.7, n)), 1, 250_000).astype(np.int64)
    revenue = employees * _INDUSTRY_RPE[industry] * rng.lognormal(0.0, 0.45, n)
    revenue = np.round(revenue, -3)
    employees_missing = rng.random(n) < 0.04
    revenue_missing = rng.random(n) < 0.10
    # 3. engagement: one latent level drives all five signals
    z = rng.normal(0.0, 1.0, n)
    email_opens = rng.poisson(np.exp(1.4 + 0.6 * z))
    website_visits = rng.poisson(np.exp(1.0 + 0.7 * z))
    pages_viewed = website_visits + rng.poisson(website_visits * np.exp(0.4 + 0.25 * z))
    time_on_site = np.where(
        pages_viewed > 0, np.round(pages_viewed * rng.lognormal(np.log(40.0) + 0.2 * z, 0.5), 1), 0.0
    )
    days_since = np.floor(rng.exponential(np.exp(2.4 - 0.6 * z))).astype(np.int64)
    days_since = np.minimum(days_since, 365)
    # 4. decision maker
    seniority = _choice(rng, _SENIORITY_P, n)
    # 5. urgency
    timeline = _choice(rng, _TIMELINE_P, n)
    budget = _choice(rng, _BUDGET_P, n)
    # 6. text insights
    intent = _choice(rng, _INTENT_P, n)
    # context
    source = _choice(rng, _SOURCE_P, n)
    region = _choice(rng, _REGION_P, n)
    product_interest = _choice(rng, _PRODUCT_INTEREST_P, n)

    logit = (
        _LEAD_INTERCEPT
        + org_effect
        + _INDUSTRY_EFFECT[industry]
        + _size_effect(employees)
        + 1.4 * z
        - 0.7 * (np.log1p(days_since) - 2.0)
        + _SENIORITY_EFFECT[seniority]
        + _TIMELINE_EFFECT[timeline]
        + _BUDGET_EFFECT[budget]
        + _URGENCY_INTERACTION[timeline, budget]
        + _INTENT_EFFECT[intent]
        + _SOURCE_EFFECT[source]
        + _REGION_EFFECT[region]
        + _PRODUCT_INTEREST_EFFECT[product_interest]
        + rng.normal(0.0, _LEAD_NOISE_SD, n)
    )
    will_convert = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    known = created_ns <= end_ns - UNKNOWN_OUTCOME_DAYS * _NS_PER_DAY
    converted = pd.array(np.where(known, will_convert, False), dtype="boolean")
    converted[~known] = pd.NA
    # conversion 0.5 to 44.5 days after creation: always inside the window for a known outcome
    delay_days = 0.5 + 44.0 * rng.beta(1.5, 4.0, n)
    converted_ns = created_ns + (delay_days * _NS_PER_DAY).astype(np.int64)
    converted_ns -= converted_ns % _NS_PER_SECOND
    converted_ns = np.where(known & will_convert, converted_ns, np.iinfo(np.int64).min)

    job_title = _job_titles(rng, seniority)
    description = _descriptions(rng, intent)
    # per-org numbering in creation order
    first_of_org = np.r_[0, np.flatnonzero(np.diff(org)) + 1] if n else np.zeros(0, np.int64)
    seq = np.arange(n) - np.repeat(first_of_org, np.diff(np.r_[first_of_org, n])) + 1
    pi_names = np.array(PRODUCT_INTERESTS, dtype=object)[product_interest]
    company_employees = pd.array(employees, dtype="Int64")
    company_employees[employees_missing] = pd.NA

    return pd.DataFrame(
        {
            "org_index": org,
            "external_id": pd.Series([f"L-{s:06d}" for s in seq], dtype=str),
            "industry": pd.Series(np.array(INDUSTRIES, dtype=object)[industry], dtype=str),
            "company_employees": company_employees,
            "company_revenue": np.where(revenue_missing, np.nan, revenue),
            "email_opens": email_opens.astype(np.int64),
            "website_visits": website_visits.astype(np.int64),
            "pages_viewed": pages_viewed.astype(np.int64),
            "time_on_site_seconds": time_on_site.astype(np.float64),
            "days_since_last_activity": days_since,
            "job_title": pd.Series(job_title, dtype=str),
            "seniority": pd.Series(np.array(SENIORITIES, dtype=object)[seniority], dtype=str),
            "timeline": pd.Series(np.array(TIMELINES, dtype=object)[timeline], dtype=str),
            "budget_signal": pd.Series(np.array(BUDGET_SIGNALS, dtype=object)[budget], dtype=str),
            "description": pd.Series(description, dtype=str),
            "source": pd.Series(np.array(SOURCES, dtype=object)[source], dtype=str),
            "region": pd.Series(np.array(REGIONS, dtype=object)[region], dtype=str),
            "created_at": _timestamps(created_ns),
            "converted": converted,
            "converted_at": _timestamps(converted_ns),
            "attributes": pd.Series([{"product_interest": p} for p in pi_names], dtype=object),
        }
    )


def _job_titles(rng: np.random.Generator, seniority: np.ndarray) -> list[str]:
    n = seniority.size
    offsets = np.cumsum([0] + [len(t) for t in _TITLES_BY_SENIORITY])
    flat = np.array([t for group in _TITLES_BY_SENIORITY for t in group], dtype=object)
    sizes = np.diff(offsets)[seniority]
    idx = offsets[seniority] + (rng.random(n) * sizes).astype(np.int64)
    dept = _DEPARTMENTS[rng.integers(0, len(_DEPARTMENTS), n)]
    return _fill(flat, idx, dept=dept)


def _descriptions(rng: np.random.Generator, intent: np.ndarray) -> list[str]:
    """1-3 sentences: the intent sentence, a neutral context sentence, sometimes a misleading extra."""
    n = intent.size
    pools = _DESCRIPTION_SENTENCES
    offsets = np.cumsum([0] + [len(p) for p in pools])
    flat = np.array([s for pool in pools for s in pool], dtype=object)
    sizes = np.diff(offsets)

    def pick(group: np.ndarray) -> np.ndarray:
        return np.asarray(offsets[group] + (rng.random(group.size) * sizes[group]).astype(np.int64))

    slots = {
        "n": rng.choice(np.array([5, 10, 12, 15, 20, 25, 40, 50, 75, 100, 150, 200]), n),
        "k": rng.integers(2, 30, n),
        "month": np.array(_MONTH_NAMES, dtype=object)[rng.integers(0, 12, n)],
        "plan": np.array(_PLANS, dtype=object)[rng.integers(0, len(_PLANS), n)],
        "competitor": np.array(_COMPETITORS, dtype=object)[rng.integers(0, len(_COMPETITORS), n)],
        "feature": np.array(_FEATURES, dtype=object)[rng.integers(0, len(_FEATURES), n)],
        "tool": np.array(_TOOLS, dtype=object)[rng.integers(0, len(_TOOLS), n)],
        "dept": _DEPARTMENTS[rng.integers(0, len(_DEPARTMENTS), n)],
    }
    main = _fill(flat, pick(intent), **slots)
    context = _fill(flat, pick(np.full(n, 2)), **slots)
    # 12% carry an extra sentence from a random intent: the text is an informative, not a perfect, signal
    extra_group = rng.integers(0, len(pools), n)
    extra = _fill(flat, pick(extra_group), **slots)
    has_extra = rng.random(n) < 0.12
    main_first = rng.random(n) < 0.6
    out = []
    for i in range(n):
        parts = [main[i], context[i]] if main_first[i] else [context[i], main[i]]
        if intent[i] == 2 and main[i] == context[i]:
            parts = [main[i]]
        if has_extra[i]:
            parts.append(extra[i])
        out.append(" ".join(parts))
    return out


# --------------------------------------------------------------------------------------------------
# monthly sales
# --------------------------------------------------------------------------------------------------


def _monthly_sales(
    rng: np.random.Generator,
    profiles: np.ndarray,
    month_dates: list[dt.date],
    first_calendar_month: int,
) -> pd.DataFrame:
    n_orgs, m = profiles.size, len(month_dates)
    t = np.arange(m, dtype=np.float64)[None, :]
    calendar = ((first_calendar_month + np.arange(m)) % 12)[None, :]
    is_ = {p: (profiles == p)[:, None] for p in SALES_PROFILES}

    level = rng.lognormal(np.log(40_000.0), 0.9, n_orgs)[:, None]
    level = np.where(is_["intermittent"], level * 0.15, level)
    growth = rng.normal(0.06, 0.10, n_orgs)[:, None]  # per year
    a1 = rng.uniform(0.05, 0.35, n_orgs)[:, None]
    a2 = np.where(rng.random(n_orgs) < 0.5, rng.uniform(0.02, 0.12, n_orgs), 0.0)[:, None]
    ph1 = rng.uniform(0.0, 2 * np.pi, n_orgs)[:, None]
    ph2 = rng.uniform(0.0, 2 * np.pi, n_orgs)[:, None]
    season = a1 * np.sin(2 * np.pi * calendar / 12 + ph1) + a2 * np.sin(4 * np.pi * calendar / 12 + ph2)

    noise_sd = np.select(
        [is_["easy"], is_["medium"], is_["hard"], is_["short"], is_["intermittent"]],
        [0.03, 0.08, 0.16, 0.07, 0.45],
        default=0.0,
    )
    shock_p = np.select([is_["medium"], is_["hard"], is_["short"]], [0.01, 0.05, 0.01], default=0.0)
    shocks = np.where(rng.random((n_orgs, m)) < shock_p, rng.normal(-0.2, 0.5, (n_orgs, m)), 0.0)
    # hard: a level shift and a trend change at random points of the window
    shift_at = rng.uniform(0.2, 0.8, n_orgs)[:, None] * m
    shift = rng.choice([-1.0, 1.0], n_orgs)[:, None] * rng.uniform(0.2, 0.6, n_orgs)[:, None]
    bend_at = rng.uniform(0.2, 0.8, n_orgs)[:, None] * m
    bend = rng.normal(0.0, 0.3, n_orgs)[:, None]  # change of yearly growth
    hard_part = np.where(t >= shift_at, shift, 0.0) + bend * np.maximum(t - bend_at, 0.0) / 12
    hard_part = np.where(is_["hard"], hard_part, 0.0)

    log_rev = (
        np.log(level)
        + growth * t / 12
        + season
        + rng.normal(0.0, 1.0, (n_orgs, m)) * noise_sd
        + shocks
        + hard_part
    )
    revenue = np.round(np.exp(log_rev), 2)

    # intermittent: many zero months (at least one when there are two months or more)
    zero_p = rng.uniform(0.3, 0.6, n_orgs)[:, None]
    zeros = (rng.random((n_orgs, m)) < zero_p) & is_["intermittent"]
    forced = rng.integers(0, m, n_orgs)
    no_zero = is_["intermittent"][:, 0] & ~zeros.any(axis=1) & (m >= 2)
    zeros[np.flatnonzero(no_zero), forced[no_zero]] = True
    revenue = np.where(zeros, 0.0, revenue)

    # which months exist: short keeps its last 12-20 months, empty has none
    short_len = rng.integers(_SHORT_MIN, _SHORT_MAX + 1, n_orgs)[:, None]
    present = np.ones((n_orgs, m), dtype=bool)
    present &= ~(is_["short"] & (t < m - short_len))
    present &= ~is_["empty"]

    org_idx, month_idx = np.nonzero(present)
    month_arr = np.empty(m, dtype=object)
    month_arr[:] = month_dates
    return pd.DataFrame(
        {
            "org_index": org_idx.astype(np.int64),
            "month": pd.Series(month_arr[month_idx], dtype=object),
            "revenue": revenue[org_idx, month_idx].astype(np.float64),
        }
    )


# --------------------------------------------------------------------------------------------------
# interactions
# --------------------------------------------------------------------------------------------------


def _interactions(
    rng: np.random.Generator,
    leads: pd.DataFrame,
    per_lead: float,
    window_end: pd.Timestamp,
) -> pd.DataFrame:
    n_leads = len(leads)
    counts = rng.poisson(per_lead, n_leads) if per_lead > 0 else np.zeros(n_leads, np.int64)
    lead_row = np.repeat(np.arange(n_leads), counts)
    n = int(lead_row.size)
    org = leads["org_index"].to_numpy(dtype=np.int64)[lead_row]
    lead_created = pd.DatetimeIndex(leads["created_at"]).as_unit("ns").asi8[lead_row]

    # truncated exponential delay (mean ~10 days) so that every interaction falls inside the window
    room = np.maximum(window_end.value - 1 - lead_created, 0).astype(np.float64)
    mean = 10.0 * _NS_PER_DAY
    u = rng.random(n)
    delay = -mean * np.log1p(-u * (1.0 - np.exp(-room / mean)))
    created_ns = lead_created + np.minimum(delay, room).astype(np.int64)
    created_ns -= created_ns % _NS_PER_SECOND

    label = _choice(rng, _SENTIMENT_P, n)
    texts, channel = _interaction_texts(rng, label)
    # label noise: 5% of rows get one of the other two labels
    flip = rng.random(n) < _LABEL_NOISE
    noisy_label = np.where(flip, (label + rng.integers(1, 3, n)) % 3, label)

    order = np.lexsort((created_ns, org))
    org, created_ns, lead_row = org[order], created_ns[order], lead_row[order]
    first_of_org = np.r_[0, np.flatnonzero(np.diff(org)) + 1] if n else np.zeros(0, np.int64)
    seq = np.arange(n) - np.repeat(first_of_org, np.diff(np.r_[first_of_org, n])) + 1
    lead_ids = leads["external_id"].to_numpy(dtype=object)

    return pd.DataFrame(
        {
            "org_index": org,
            "external_id": pd.Series([f"I-{s:06d}" for s in seq], dtype=str),
            "lead_external_id": pd.Series(lead_ids[lead_row], dtype=str),
            "channel": pd.Series(np.array(CHANNELS, dtype=object)[channel[order]], dtype=str),
            "text": pd.Series(np.array(texts, dtype=object)[order] if n else [], dtype=str),
            "created_at": _timestamps(created_ns),
            "sentiment_label": pd.Series(
                np.array(SENTIMENT_LABELS, dtype=object)[noisy_label[order]], dtype=str
            ),
        }
    )


def _interaction_texts(rng: np.random.Generator, label: np.ndarray) -> tuple[list[str], np.ndarray]:
    n = label.size
    channel = np.empty(n, dtype=np.int64)
    for k in range(len(SENTIMENT_LABELS)):
        rows = np.flatnonzero(label == k)
        channel[rows] = _choice(rng, _CHANNEL_P[k], rows.size)

    offsets = np.cumsum([0] + [len(b) for b in _BODIES])
    flat = np.array([b for group in _BODIES for b in group], dtype=object)
    sizes = np.diff(offsets)
    body_idx = offsets[label] + (rng.random(n) * sizes[label]).astype(np.int64)
    # a second body sentence of the same label for 35% of rows
    body2_idx = offsets[label] + (rng.random(n) * sizes[label]).astype(np.int64)
    has_body2 = (rng.random(n) < 0.35) & (body2_idx != body_idx)

    slots = {
        "name": np.array(_FIRST_NAMES, dtype=object)[rng.integers(0, len(_FIRST_NAMES), n)],
        "rep": np.array(_REPS, dtype=object)[rng.integers(0, len(_REPS), n)],
        "feature": np.array(_FEATURES, dtype=object)[rng.integers(0, len(_FEATURES), n)],
        "weekday": np.array(_WEEKDAYS, dtype=object)[rng.integers(0, len(_WEEKDAYS), n)],
        "month": np.array(_MONTH_NAMES, dtype=object)[rng.integers(0, 12, n)],
        "plan": np.array(_PLANS, dtype=object)[rng.integers(0, len(_PLANS), n)],
        "competitor": np.array(_COMPETITORS, dtype=object)[rng.integers(0, len(_COMPETITORS), n)],
        "time": np.array(_TIMES, dtype=object)[rng.integers(0, len(_TIMES), n)],
        "n": rng.choice(np.array([5, 10, 15, 20, 25, 30, 50, 80, 100, 120]), n),
        "k": rng.integers(2, 9, n),
    }
    opening = _fill(np.array(_OPENINGS, dtype=object), rng.integers(0, len(_OPENINGS), n), **slots)
    body = _fill(flat, body_idx, **slots)
    body2 = _fill(flat, body2_idx, **slots)
    closing = _fill(np.array(_CLOSINGS, dtype=object), rng.integers(0, len(_CLOSINGS), n), **slots)
    # after an opening that ends with a comma the body continues the sentence
    lower_body = np.array([o.endswith(",") for o in opening], dtype=bool) & np.array(
        [not t.startswith("{") for t in flat[body_idx]], dtype=bool
    )
    texts = []
    for i in range(n):
        first = body[i][0].lower() + body[i][1:] if lower_body[i] else body[i]
        parts = [opening[i], first, body2[i] if has_body2[i] else "", closing[i]]
        texts.append(" ".join(p for p in parts if p))
    return texts, channel
