"""Deterministic synthetic Mixpanel raw-export lines, shaped like real Export API output.

The emulator, the tests and the bench need realistic days without a Mixpanel project: web and
mobile sessions of a stable pool of users per project, custom properties of every JSON type, and
the odd cases real exports contain (duplicates, missing ids, float ``time``, U+2028 in strings...).
Every value derives from ``(project_id, day)`` (plus the batch for late events), so the same call
always yields the same bytes, and days are streamed line by line, never held in memory.

Odd cases: lines are grouped in blocks of ``ODD_CASE_BLOCK`` (100). In every block each kind of
``ODD_CASES`` hits exactly one line (1 % of lines each; ``no_identity`` in every other block only,
0.5 %), at positions 1..90 spaced ``_ODD_CASE_SPACING`` apart, so the line before an odd line is
always an ordinary one. Any
day of 100 events or more therefore contains every kind at least once.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import orjson

TIME_REGIMES = ("utc", "project_local")
ODD_CASES = (
    "duplicate_line",  # the previous line emitted again, byte for byte (same dedup key)
    "missing_insert_id",
    "missing_distinct_id",  # `$device_id` still present
    "no_identity",  # no distinct_id, no $device_id, no $user_id
    "float_time",  # `time` with milliseconds, e.g. 1721228056.002
    "case_colliding_names",  # `utm_medium` and `UTM_Medium`
    "odd_property_names",  # a space, a dot, a newline and a leading `$` in names
    "line_separators",  # U+2028 and U+2029 inside a string value
    "non_ascii",  # emoji and CJK in values
    "reused_insert_id",  # the previous (different) event's `$insert_id`
)
ODD_CASE_BLOCK = 100
# Odd cases only in every other block (0.5 % of lines): an event without any identity is
# quarantined, and a day (or an open day's first hours) must sit well inside the default 1 %
# quarantine limit.
_EVERY_OTHER_BLOCK = frozenset({"no_identity"})
_ODD_CASE_SPACING = 9
_USERS_PER_PROJECT = 1500
_B64_TO_ALNUM = bytes.maketrans(b"+/", b"xQ")

_PLACES = (
    ("San Francisco", "California", "US"),
    ("New York", "New York", "US"),
    ("Austin", "Texas", "US"),
    ("London", "England", "GB"),
    ("Berlin", "Land Berlin", "DE"),
    ("München", "Bavaria", "DE"),
    ("Paris", "Île-de-France", "FR"),
    ("São Paulo", "São Paulo", "BR"),
    ("Montréal", "Quebec", "CA"),
    ("Bengaluru", "Karnataka", "IN"),
    ("Tokyo", "Tokyo", "JP"),
    ("Zürich", "Zurich", "CH"),
    ("Sydney", "New South Wales", "AU"),
    ("Mexico City", "Mexico City", "MX"),
)
# (browser, version as sent by recent SDKs, version as sent by others: a number)
_BROWSERS = (
    ("Chrome", "131.0.6778.86", 135),
    ("Safari", "17.4.1", 18),
    ("Firefox", "133.0", 133),
    ("Microsoft Edge", "131.0.2903.70", 131),
)
_WEB_OS = ("Windows", "Mac OS X", "Linux", "iOS", "Android", "Chrome OS")
_WEB_SCREENS = ((1080, 1920), (900, 1440), (864, 1536), (844, 390), (1440, 2560))
# (manufacturer, model, device, screen height, screen width)
_ANDROID_DEVICES = (
    ("Google", "Pixel 8", "shiba", 2400, 1080),
    ("samsung", "SM-S918B", "dm3q", 3088, 1440),
    ("OnePlus", "CPH2449", "OP5929L1", 2412, 1080),
    ("Xiaomi", "2201117TG", "spes", 2400, 1080),
)
_IOS_DEVICES = (
    ("Apple", "iPhone15,2", "iPhone", 852, 393),
    ("Apple", "iPhone16,1", "iPhone", 852, 393),
    ("Apple", "iPad13,18", "iPad", 1180, 820),
)
_APP_VERSIONS = (("4.12.0", 41200), ("4.12.1", 41201), ("4.13.0", 41300))
_FIRST_NAMES = ("ana", "li", "sam", "noor", "kenji", "maria", "olu", "ines", "tom", "priya")
_EMAIL_DOMAINS = ("example.com", "mail.example.org", "corp.example.net")
# (sku, name, price, categories)
_PRODUCTS = (
    ("SKU-1001", "Trail Running Shoe", 129.0, ("shoes", "running")),
    ("SKU-2040", "Merino Hoodie", 89.5, ("apparel",)),
    ("SKU-3300", '4K Monitor 27"', 800.0, ("electronics", "displays")),
    ("SKU-4127", "Espresso Machine", 349.99, ("kitchen",)),
    ("SKU-5009", "保温杯 Thermal Bottle", 24.0, ("kitchen", "outdoor")),
    ("SKU-6111", "Noise-cancelling Headphones", 279.0, ("electronics", "audio")),
)
_PAGES = (
    ("/", "Home"),
    ("/collections/new", "New arrivals"),
    ("/blog/how-to-choose-a-monitor", "How to choose a monitor"),
    ("/account", "Your account"),
    ("/help/shipping", "Shipping & returns"),
)
_SCREENS = ("Home", "Search", "Product", "Cart", "Settings", "Orders")
_REFERRERS = (
    ("$direct", "$direct"),
    ("https://www.google.com/", "www.google.com"),
    ("https://t.co/", "t.co"),
    ("https://news.ycombinator.com/", "news.ycombinator.com"),
)
_CAMPAIGNS = (
    ("google", "cpc", "winter_sale_2025"),
    ("newsletter", "email", "weekly-digest"),
    ("facebook", "paid_social", "retargeting_q4"),
)
_SITE = "https://shop.example.com"

Props = dict[str, Any]


@dataclass(frozen=True, slots=True)
class _User:
    """A pooled user: its platform and the properties its SDK attaches to every event."""

    platform: str  # "web", "wordpress", "android" or "iphone"
    anonymous: bool
    props: Props


@lru_cache(maxsize=16)
def _user_pool(project_id: str) -> tuple[_User, ...]:
    """The project's users, stable across days so that identities recur like in a real project."""
    rng = random.Random(f"{project_id}:users")
    return tuple(_make_user(rng) for _ in range(_USERS_PER_PROJECT))


def _uuid(rng: random.Random) -> str:
    """A UUID-shaped random id (faster than ``uuid.UUID`` on the per-event path)."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"


def _alnum_id(rng: random.Random) -> str:
    """A 36-character ``[A-Za-z0-9]`` id, like the JS SDK's ``$insert_id``."""
    return base64.b64encode(rng.randbytes(27)).translate(_B64_TO_ALNUM).decode()


def _make_user(rng: random.Random) -> _User:
    platform = rng.choices(("web", "wordpress", "android", "iphone"), (50, 10, 20, 20))[0]
    if platform in ("web", "wordpress"):
        device_id = f"{rng.getrandbits(44):011x}-{rng.getrandbits(52):013x}-26011b51-1fa400"
    else:
        device_id = _uuid(rng).upper() if platform == "iphone" else _uuid(rng)
    anonymous = rng.random() < 0.3
    if anonymous:
        distinct_id = f"$device:{device_id}"
    elif rng.random() < 0.4:
        name = rng.choice(_FIRST_NAMES)
        distinct_id = f"{name}.{rng.randrange(10_000)}@{rng.choice(_EMAIL_DOMAINS)}"
    else:
        distinct_id = _uuid(rng)
    props: Props = {"distinct_id": distinct_id, "$device_id": device_id}
    if not anonymous:
        props["$user_id"] = distinct_id
    city, region, country = rng.choice(_PLACES)
    props |= {
        "$city": city,
        "$region": region,
        "mp_country_code": country.lower() if rng.random() < 0.03 else country,
    }
    if platform in ("web", "wordpress"):
        browser, version_text, version_number = rng.choice(_BROWSERS)
        height, width = rng.choice(_WEB_SCREENS)
        props |= {
            "$browser": browser,
            "$browser_version": version_number if rng.random() < 0.3 else version_text,
            "$os": rng.choice(_WEB_OS),
            "$screen_height": height,
            "$screen_width": width,
            "mp_lib": "web" if platform == "web" else "Segment: analytics-wordpress",
            "$lib_version": rng.choice(("2.58.0", "2.61.1")) if platform == "web" else "1.1.3",
        }
    else:
        android = platform == "android"
        manufacturer, model, device, height, width = rng.choice(
            _ANDROID_DEVICES if android else _IOS_DEVICES
        )
        version, release = rng.choice(_APP_VERSIONS)
        props |= {
            "$app_version_string": version,
            "$app_release": release if android else str(release),
            "$manufacturer": manufacturer,
            "$model": model,
            "$device": device,
            "$os": "Android" if android else "iOS",
            "$os_version": rng.choice(("14", "15")) if android else rng.choice(("17.6.1", "18.2")),
            "$screen_height": height,
            "$screen_width": width,
            "$wifi": rng.random() < 0.6,
            "mp_lib": platform,
            "$lib_version": rng.choice(("7.5.2", "8.0.0")) if android else "4.3.0",
        }
    return _User(platform, anonymous, props)


def _product_props(rng: random.Random) -> Props:
    sku, name, price, categories = rng.choice(_PRODUCTS)
    return {
        "item_id": sku,
        "item_name": name,
        "item_price": f"{price:.2f}",
        "categories": list(categories),
        "product": {
            "sku": sku,
            "pricing": {
                "currency": "USD",
                "tiers": {"retail": price, "member": round(price * 0.9, 2)},
            },
        },
        "in_stock": rng.random() < 0.9,
    }


def _order_items(rng: random.Random) -> list[Props]:
    return [
        {"sku": sku, "qty": 1 + rng.randrange(3), "price": price}
        for sku, _, price, _ in rng.sample(_PRODUCTS, 1 + rng.randrange(3))
    ]


def _funnel(rng: random.Random, anonymous: bool) -> Iterator[tuple[str, Props]]:
    """Shop funnel shared by web and mobile sessions; each step keeps a share of the previous."""
    if rng.random() < 0.55:
        product = _product_props(rng)
        yield "Viewed Product", product
        if rng.random() < 0.45:
            quantity = 1 + rng.randrange(3)
            yield (
                "Added to Cart",
                {
                    "item_id": product["item_id"],
                    "item_name": product["item_name"],
                    "item_price": product["item_price"],
                    "quantity": quantity,
                },
            )
            if rng.random() < 0.6:
                items = _order_items(rng)
                total = round(sum(item["qty"] * item["price"] for item in items), 2)
                coupon = "WELCOME10" if rng.random() < 0.2 else None
                yield (
                    "Checkout Started",
                    {
                        "cart_total": total,
                        "items": items,
                        "coupon_code": coupon,
                        "is_gift": rng.random() < 0.1,
                    },
                )
                if rng.random() < 0.7:
                    yield (
                        "Purchase",
                        {
                            "order_id": f"ORD-{rng.randrange(10**8):08d}",
                            "revenue": total,
                            "currency": "USD",
                            "items": items,
                            "coupon_code": coupon,
                            "payment_method": rng.choice(("card", "paypal", "apple_pay")),
                            "shipping": {"method": "standard", "address": {"postal_prefix": "941"}},
                        },
                    )
    if anonymous and rng.random() < 0.15:
        yield (
            "Sign Up",
            {
                "signup_method": rng.choice(("email", "google", "apple")),
                "plan": rng.choice(("free", "pro")),
                "marketing_opt_in": rng.random() < 0.4,
                "referral_code": None if rng.random() < 0.7 else f"REF{rng.randrange(1000):03d}",
            },
        )


def _web_session(rng: random.Random, user: _User) -> Iterator[tuple[str, Props]]:
    referrer, referring_domain = rng.choice(_REFERRERS)
    common: Props = {"$referrer": referrer, "$referring_domain": referring_domain}
    if rng.random() < 0.35:
        source, medium, campaign = rng.choice(_CAMPAIGNS)
        common |= {"utm_source": source, "utm_medium": medium, "utm_campaign": campaign}
    for _ in range(1 + rng.randrange(3)):
        path, title = rng.choice(_PAGES)
        yield (
            "$mp_web_page_view",
            {
                **common,
                "$current_url": _SITE + path,
                "current_page_title": title,
                "current_url_path": path,
                "$mp_autocapture": True,
            },
        )
    for name, props in _funnel(rng, user.anonymous):
        path = "/checkout" if name in ("Checkout Started", "Purchase") else "/products"
        yield name, {**common, "$current_url": _SITE + path, "current_page_title": name, **props}


def _mobile_session(rng: random.Random, user: _User) -> Iterator[tuple[str, Props]]:
    yield (
        "App Open",
        {"from_background": rng.random() < 0.5, "launch_ms": 200 + rng.randrange(2500)},
    )
    previous = None
    for _ in range(1 + rng.randrange(4)):
        screen = rng.choice(_SCREENS)
        yield "Screen View", {"screen_name": screen, "previous_screen": previous}
        previous = screen
    yield from _funnel(rng, user.anonymous)


class _DayEvents:
    """Endless base events (sessions of pooled users) whose true instants fall inside one day.

    Consecutive events differ in (distinct_id, time), which the ``reused_insert_id`` case relies
    on: within a session time strictly increases, and consecutive sessions have distinct users.
    """

    def __init__(
        self, rng: random.Random, project_id: str, day: date, timezone: str, time_regime: str
    ) -> None:
        zone = ZoneInfo(timezone)
        self._rng = rng
        self._users = _user_pool(project_id)
        self._zone = zone
        self._start = int(datetime.combine(day, time(), zone).timestamp())
        self._end = int(datetime.combine(day + timedelta(days=1), time(), zone).timestamp())
        self._local = time_regime == "project_local"
        first, last = self._offset(self._start), self._offset(self._end - 1)
        # Outside DST-transition days the offset is constant: skip the per-event lookup.
        self._constant_offset = first if first == last else None

    def _offset(self, epoch: int) -> int:
        offset = datetime.fromtimestamp(epoch, self._zone).utcoffset()
        return int(offset.total_seconds()) if offset is not None else 0

    def encode_time(self, true_epoch: int) -> int:
        """``time`` as Mixpanel stores it: true UTC, or local wall-clock read as UTC (legacy)."""
        if not self._local:
            return true_epoch
        offset = self._constant_offset
        return true_epoch + (offset if offset is not None else self._offset(true_epoch))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rng, users = self._rng, self._users
        span = self._end - self._start
        previous_user = -1
        while True:
            index = rng.randrange(len(users))
            if index == previous_user:
                index = (index + 1) % len(users)
            previous_user = index
            user = users[index]
            web = user.platform in ("web", "wordpress")
            session = _web_session(rng, user) if web else _mobile_session(rng, user)
            moment = self._start + int(rng.random() * span)
            for name, extra in session:
                if moment >= self._end:
                    break
                yield self._event(name, user, moment, extra)
                moment += 1 + int(rng.random() * 90)

    def _event(self, name: str, user: _User, moment: int, extra: Props) -> dict[str, Any]:
        rng = self._rng
        processed = moment * 1000 + int(rng.random() * 1000) + 1000 + int(rng.random() * 8000)
        imported = rng.random() < 0.04
        web = user.platform == "web"
        endpoint = "api-js.mixpanel.com" if web and not imported else "api.mixpanel.com"
        props: Props = {
            "time": self.encode_time(moment),
            **user.props,
            "$insert_id": _alnum_id(rng) if web else _uuid(rng),
            "$mp_api_endpoint": endpoint,
            "$mp_api_timestamp_ms": processed - 5 - int(rng.random() * 300),
            "mp_processing_time_ms": processed,
            **extra,
        }
        if imported:
            props["$import"] = True
        return {"event": name, "properties": props}


def _check(count: int, time_regime: str) -> None:
    if count < 0:
        raise ValueError(f"event count must be >= 0, got {count}")
    if time_regime not in TIME_REGIMES:
        raise ValueError(f"time_regime must be one of {TIME_REGIMES}, got {time_regime!r}")


def synthetic_day(
    project_id: str,
    day: date,
    *,
    events_per_day: int,
    timezone: str = "UTC",
    time_regime: str = "utc",
) -> Iterator[bytes]:
    """The day's export lines (no trailing newline), streamed; identical for identical arguments.

    The true instant of every event lies inside ``day`` in ``timezone``; ``time_regime`` says how
    ``time`` encodes it (see ``TIME_REGIMES``). Odd cases follow the module docstring's schedule.
    """
    _check(events_per_day, time_regime)
    rng = random.Random(f"{project_id}:{day.isoformat()}")
    events = iter(_DayEvents(rng, project_id, day, timezone, time_regime))
    return _with_odd_cases(rng, events, events_per_day)


def _block_schedule(rng: random.Random) -> dict[int, str]:
    kinds = list(ODD_CASES)
    rng.shuffle(kinds)
    first = 1 + rng.randrange(_ODD_CASE_SPACING)
    return {first + _ODD_CASE_SPACING * i: kind for i, kind in enumerate(kinds)}


def _with_odd_cases(
    rng: random.Random, events: Iterator[dict[str, Any]], count: int
) -> Iterator[bytes]:
    schedule: dict[int, str] = {}
    previous_line = b""
    previous_insert_id = ""
    for index in range(count):
        position = index % ODD_CASE_BLOCK
        if position == 0:
            schedule = _block_schedule(rng)
        kind = schedule.get(position)
        if kind in _EVERY_OTHER_BLOCK and (index // ODD_CASE_BLOCK) % 2:
            kind = None
        if kind == "duplicate_line":
            yield previous_line
            continue
        event = next(events)
        props = event["properties"]
        insert_id = props["$insert_id"]
        if kind == "reused_insert_id":
            props["$insert_id"] = previous_insert_id
        elif kind is not None:
            _MUTATIONS[kind](rng, props)
        previous_line = orjson.dumps(event)
        previous_insert_id = insert_id
        yield previous_line


def _float_time(rng: random.Random, props: Props) -> None:
    props["time"] += (1 + rng.randrange(999)) / 1000


def _case_colliding_names(rng: random.Random, props: Props) -> None:
    props.setdefault("utm_medium", "email")
    props["UTM_Medium"] = rng.choice(("Email", "CPC"))


def _odd_property_names(rng: random.Random, props: Props) -> None:
    props["Plan Type"] = rng.choice(("free", "pro"))
    props["cart.total"] = round(rng.random() * 500, 2)
    props["note\nsecond line"] = "property name with a newline"
    props["$custom_experiment"] = rng.choice(("control", "variant-b"))


def _line_separators(rng: random.Random, props: Props) -> None:
    props["comment"] = "first line\u2028second line\u2029third line"


def _non_ascii(rng: random.Random, props: Props) -> None:
    props["review_text"] = rng.choice(("很好用 推荐 👍", "素晴らしい 🎉", "최고예요 ✨"))
    props["nickname"] = "Zoë 🚀"


def _drop_insert_id(rng: random.Random, props: Props) -> None:
    del props["$insert_id"]


def _drop_distinct_id(rng: random.Random, props: Props) -> None:
    del props["distinct_id"]


def _drop_identity(rng: random.Random, props: Props) -> None:
    for key in ("distinct_id", "$device_id", "$user_id"):
        props.pop(key, None)


_MUTATIONS: dict[str, Callable[[random.Random, Props], None]] = {
    "missing_insert_id": _drop_insert_id,
    "missing_distinct_id": _drop_distinct_id,
    "no_identity": _drop_identity,
    "float_time": _float_time,
    "case_colliding_names": _case_colliding_names,
    "odd_property_names": _odd_property_names,
    "line_separators": _line_separators,
    "non_ascii": _non_ascii,
}


def late_events(
    project_id: str,
    day: date,
    *,
    count: int,
    batch: int,
    processed_at_ms: int,
    timezone: str = "UTC",
    time_regime: str = "utc",
) -> list[bytes]:
    """``count`` events of ``day`` that Mixpanel processed late, from ``processed_at_ms`` on.

    Deterministic in (project_id, day, batch); new ``$insert_id``s, no odd cases, so each line is
    a distinct event that a re-export (or a ``where`` on ``mp_processing_time_ms``) must pick up.
    """
    _check(count, time_regime)
    rng = random.Random(f"{project_id}:{day.isoformat()}:late:{batch}")
    events = iter(_DayEvents(rng, project_id, day, timezone, time_regime))
    lines = []
    processed = processed_at_ms
    for _ in range(count):
        event = next(events)
        props = event["properties"]
        props["$mp_api_timestamp_ms"] = processed - 3 - int(rng.random() * 200)
        props["mp_processing_time_ms"] = processed
        if rng.random() < 0.5:  # offline mobile clients and /import backfills
            props["$import"] = True
        lines.append(orjson.dumps(event))
        processed += 1 + int(rng.random() * 25)
    return lines
