"""The synthetic users of a project and their web and mobile sessions, event by event."""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

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
class User:
    """A pooled user: its platform and the properties its SDK attaches to every event."""

    platform: str  # "web", "wordpress", "android" or "iphone"
    anonymous: bool
    props: Props


@lru_cache(maxsize=16)
def user_pool(project_id: str) -> tuple[User, ...]:
    """The project's users, stable across days so that identities recur like in a real project."""
    rng = random.Random(f"{project_id}:users")
    return tuple(_make_user(rng) for _ in range(_USERS_PER_PROJECT))


def random_uuid(rng: random.Random) -> str:
    """A UUID-shaped random id (faster than ``uuid.UUID`` on the per-event path)."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"


def alnum_id(rng: random.Random) -> str:
    """A 36-character ``[A-Za-z0-9]`` id, like the JS SDK's ``$insert_id``."""
    return base64.b64encode(rng.randbytes(27)).translate(_B64_TO_ALNUM).decode()


def _make_user(rng: random.Random) -> User:
    platform = rng.choices(("web", "wordpress", "android", "iphone"), (50, 10, 20, 20))[0]
    if platform in ("web", "wordpress"):
        device_id = f"{rng.getrandbits(44):011x}-{rng.getrandbits(52):013x}-26011b51-1fa400"
    else:
        device_id = random_uuid(rng).upper() if platform == "iphone" else random_uuid(rng)
    anonymous = rng.random() < 0.3
    if anonymous:
        distinct_id = f"$device:{device_id}"
    elif rng.random() < 0.4:
        name = rng.choice(_FIRST_NAMES)
        distinct_id = f"{name}.{rng.randrange(10_000)}@{rng.choice(_EMAIL_DOMAINS)}"
    else:
        distinct_id = random_uuid(rng)
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
    return User(platform, anonymous, props)


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


def web_session(rng: random.Random, user: User) -> Iterator[tuple[str, Props]]:
    """A web session's events: page views, then perhaps a funnel, all with its referrer."""
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


def mobile_session(rng: random.Random, user: User) -> Iterator[tuple[str, Props]]:
    """A mobile session's events: an app open, screen views and perhaps a funnel."""
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
