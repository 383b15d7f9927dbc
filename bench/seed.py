"""Demo data through the public API: after `make run`, `make seed` gives you a live feed.

    .venv/bin/python bench/seed.py [--url http://127.0.0.1:8000] [--users 20]

Everything goes through the same doors a client uses: signUp (or logIn when the account
exists), updateProfile, follow, and the three-step upload (createPost, the bytes sent
straight to the returned target, completeUpload). The worker of `make run` then renders
the photos; the script waits until every post is READY and prints the demo account's
credentials, a token and a feed query to paste into GraphiQL.

Running it again is safe: accounts are logged into instead of created, follow is
idempotent, and every post carries an idempotency key (its photo is generated from a
fixed seed, so a retried upload declares the same bytes).
"""

from __future__ import annotations

import argparse
import asyncio
import colorsys
import io
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from common import COMPLETE_UPLOAD, CREATE_POST, FEED_QUERY
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"  # noqa: S105 - a published demo credential, on purpose
PHOTO_SIZE = (1080, 1350)  # Instagram's portrait 4:5
NAMES = (
    "ada", "grace", "linus", "margaret", "dennis", "barbara", "ken", "frances", "alan",
    "radia", "guido", "hedy", "edsger", "katherine", "tim", "sophie", "john", "anita",
    "niklaus", "shafi", "donald", "lynn", "bjarne", "joan",
)  # fmt: skip
PLACES: tuple[str, ...] = ("the harbour", "the old town", "a rooftop", "the market")
PLACES += ("the hills", "the coast", "a quiet street", "the station", "the park", "the lake")
THINGS = ("light", "colours", "morning", "evening", "weekend", "walk", "view", "coffee")

SIGN_UP = """
mutation ($username: String!, $email: String!, $password: String!) {
  signUp(username: $username, email: $email, password: $password) {
    token user { id username } errors { field message code }
  }
}"""
LOG_IN = """
mutation ($username: String!, $password: String!) {
  logIn(username: $username, password: $password) {
    token user { id username } errors { field message code }
  }
}"""
UPDATE_PROFILE = """
mutation ($displayName: String, $bio: String) {
  updateProfile(displayName: $displayName, bio: $bio) { errors { field message code } }
}"""
FOLLOW = """
mutation ($id: ID!) { follow(userId: $id) { errors { field message code } } }"""
POST_STATUS = "query ($id: ID!) { post(id: $id) { id status failureReason } }"


class SeedError(RuntimeError):
    """The server refused something; the message says what and what to check."""


@dataclass
class Account:
    username: str
    user_id: str
    token: str


class Api:
    """A small GraphQL client: raises on top-level errors and on payload errors."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def call(self, query: str, token: str | None = None, **variables: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await self.client.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )
        if response.status_code != 200:
            raise SeedError(f"HTTP {response.status_code} from /graphql: {response.text[:300]}")
        body = response.json()
        if body.get("errors"):
            raise SeedError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    async def mutate(
        self, query: str, field: str, token: str | None = None, **variables: Any
    ) -> Any:
        payload = (await self.call(query, token, **variables))[field]
        if payload.get("errors"):
            raise SeedError(f"{field}: {payload['errors']}")
        return payload


async def account(api: Api, username: str, password: str) -> Account:
    """Sign up, or log in when the username is taken (a second run)."""
    data = (
        await api.call(
            SIGN_UP, username=username, email=f"{username}@example.com", password=password
        )
    )["signUp"]
    if data["errors"]:
        if not any(e["code"] == "CONFLICT" for e in data["errors"]):
            raise SeedError(f"signUp {username}: {data['errors']}")
        data = await api.mutate(LOG_IN, "logIn", username=username, password=password)
    return Account(username, data["user"]["id"], data["token"])


# --- Photos ---------------------------------------------------------------------------------


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except (TypeError, OSError):
        return ImageFont.load_default()


def photo(username: str, index: int, caption: str) -> bytes:
    """A colourful 1080x1350 JPEG, the same bytes for the same (user, index): a gradient
    between two random hues, soft discs, and the author and caption written on it."""
    rng = random.Random(f"{username}/{index}")  # noqa: S311 - picture content, not secrets
    hue = rng.random()

    def colour(h: float, lightness: float) -> tuple[int, int, int]:
        r, g, b = colorsys.hls_to_rgb(h % 1.0, lightness, 0.75)
        return round(r * 255), round(g * 255), round(b * 255)

    # Four corners blown up with bilinear resampling: a smooth two-dimensional gradient.
    corners = Image.new("RGB", (2, 2))
    corners.putdata(
        [
            colour(hue, 0.55),
            colour(hue + 0.12, 0.6),
            colour(hue + 0.35, 0.45),
            colour(hue + 0.5, 0.5),
        ]
    )
    image = corners.resize(PHOTO_SIZE, Image.Resampling.BILINEAR)
    overlay = Image.new("RGBA", PHOTO_SIZE, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    width, height = PHOTO_SIZE
    for _ in range(9):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(60, 320)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(*colour(rng.random(), 0.7), 70))
    image = Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")
    text = ImageDraw.Draw(image)
    text.text((72, height - 330), f"@{username}", font=_font(96), fill="white")
    text.text((72, height - 200), caption, font=_font(48), fill="white")
    text.text((72, 72), f"#{index + 1}", font=_font(64), fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


def caption_for(username: str, index: int) -> str:
    rng = random.Random(f"caption/{username}/{index}")  # noqa: S311 - not secrets
    return f"{rng.choice(THINGS).capitalize()} at {rng.choice(PLACES)} #instagraph #demo"


# --- Upload flow ----------------------------------------------------------------------------


async def send_bytes(client: httpx.AsyncClient, target: dict[str, Any], data: bytes) -> None:
    """Send the file exactly as the target says: PUT with its headers, a presigned POST
    form (its fields first, the file last, named `file`), or parts of partSize."""
    headers = {h["name"]: h["value"] for h in target["headers"]}
    try:
        if target.get("partUrls"):
            size = int(target["partSize"])
            for number, url in enumerate(target["partUrls"]):
                part = await client.put(url, content=data[number * size : (number + 1) * size])
                part.raise_for_status()
            return
        if target["method"] == "PUT":
            response = await client.put(target["url"], content=data, headers=headers)
        else:
            fields = {f["name"]: f["value"] for f in target["fields"]}
            response = await client.post(
                target["url"], data=fields, files={"file": ("photo.jpg", data, "image/jpeg")}
            )
    except httpx.ConnectError as exc:
        where = urlsplit(target["url"])
        raise SeedError(
            f"cannot reach the upload target {where.scheme}://{where.netloc}: the server's "
            "PUBLIC_BASE_URL must be the address it is reached at (set it when running on "
            "another port)"
        ) from exc
    if response.status_code not in (200, 201, 204):
        raise SeedError(f"upload refused: HTTP {response.status_code} {response.text[:200]}")


async def publish(
    api: Api, uploads: httpx.AsyncClient, who: Account, index: int
) -> tuple[str, str, str]:
    """createPost -> bytes -> completeUpload, skipping the steps a previous run did.
    Returns the post's ID, its status and its author's token."""
    caption = caption_for(who.username, index)
    data = photo(who.username, index, caption)
    created = await api.mutate(
        CREATE_POST,
        "createPost",
        who.token,
        input={
            "caption": caption,
            "media": [{"contentType": "image/jpeg", "byteSize": str(len(data))}],
            "idempotencyKey": f"seed/{who.username}/{index}",
        },
    )
    post = created["post"]
    if post["status"] != "PENDING":  # already uploaded by an earlier run
        return post["id"], post["status"], who.token
    for target in created["uploads"]:
        await send_bytes(uploads, target, data)
    done = await api.mutate(COMPLETE_UPLOAD, "completeUpload", who.token, id=post["id"])
    return post["id"], done["post"]["status"], who.token


async def wait_ready(api: Api, posts: dict[str, str], within: float) -> dict[str, dict[str, Any]]:
    """Poll until every post is READY or FAILED (the worker renders them). `posts` maps
    a post's ID to its author's token: only the author sees a post before it is READY."""
    final: dict[str, dict[str, Any]] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    with tqdm(total=len(posts), desc="rendering", unit="post") as bar:
        while len(final) < len(posts) and loop.time() < deadline:
            for post_id, token in posts.items():
                if post_id in final:
                    continue
                post = (await api.call(POST_STATUS, token, id=post_id))["post"]
                if post and post["status"] in ("READY", "FAILED"):
                    final[post_id] = post
                    bar.update(1)
            if len(final) < len(posts):
                await asyncio.sleep(0.5)
    return final


# --- Main -----------------------------------------------------------------------------------


async def seed(args: argparse.Namespace) -> int:
    base = args.url.rstrip("/")
    limits = httpx.Limits(max_connections=8)
    async with (
        httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client,
        httpx.AsyncClient(timeout=120, limits=limits) as uploads,
    ):
        try:
            ready = await client.get("/readyz")
        except httpx.ConnectError:
            print(f"nothing answers at {base}: start the system first (`make run`)")
            return 1
        if ready.status_code != 200:
            print(f"{base}/readyz says {ready.status_code}: {ready.text}")
            return 1
        if ready.json().get("workers") == 0:
            print("note: no worker heartbeat yet; posts stay PROCESSING until one runs")
        api = Api(client)
        # Mostly waiting on the server: a few requests at once, not more (argon2 in
        # signUp/logIn is CPU-heavy on purpose).
        gate = asyncio.Semaphore(4)

        async def post_one(who: Account, index: int) -> tuple[str, str, str]:
            async with gate:
                return await publish(api, uploads, who, index)

        print(f"seeding {base}")
        demo = await account(api, DEMO_USER, args.password)
        await api.mutate(
            UPDATE_PROFILE,
            "updateProfile",
            demo.token,
            displayName="Demo",
            bio="Follows everyone the seed made.",
        )
        names = list(NAMES[: args.users])
        people: list[Account] = []
        for name in tqdm(names, desc="accounts", unit="user"):
            person = await account(api, name, args.password)
            await api.mutate(
                UPDATE_PROFILE,
                "updateProfile",
                person.token,
                displayName=name.capitalize(),
                bio=f"{name.capitalize()}'s photos (demo account)",
            )
            await api.mutate(FOLLOW, "follow", demo.token, id=person.user_id)
            people.append(person)

        jobs = [(demo, 0)]  # the demo account's own post shows in its feed too
        for person in people:
            count = 2 + random.Random(person.username).randrange(2)  # noqa: S311 - not secrets
            jobs += [(person, i) for i in range(count)]
        posted: list[tuple[str, str, str]] = []
        tasks = [asyncio.create_task(post_one(who, index)) for who, index in jobs]
        try:
            with tqdm(total=len(jobs), desc="posting", unit="post") as bar:
                for done in asyncio.as_completed(tasks):
                    posted.append(await done)
                    bar.update(1)
        finally:  # one failure stops the rest before the clients close under them
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        waiting = {pid: token for pid, status, token in posted if status == "PROCESSING"}
        final = await wait_ready(api, waiting, args.timeout) if waiting else {}
        failed = [p for p in final.values() if p["status"] == "FAILED"]
        stuck = len(waiting) - len(final)
        feed = await api.call(FEED_QUERY, demo.token)
        edges = feed["feed"]["edges"]
        # Served by the API unless WEB_APP is off (production's default).
        web_client = (await client.get("/app/")).status_code == 200

    print()
    print(f"{len(people)} users, {len(jobs)} posts ({len(jobs) - len(waiting)} already there)")
    if failed:
        print(f"{len(failed)} posts FAILED: {[p['failureReason'] for p in failed]}")
    if stuck:
        print(f"{stuck} posts still PROCESSING after {args.timeout:.0f} s: is the worker running?")
    print(f"demo's feed now shows {len(edges)} posts on its first page, newest first:")
    for edge in edges[:5]:
        node = edge["node"]
        print(f"  @{node['author']['username']:10} {node['caption']}")
    print()
    if web_client:
        print(f"web client: {base}/app/")
    print(f"GraphiQL:   {base}/graphql")
    print(f"log in:     {DEMO_USER} / {args.password}  (every seeded user has the same password)")
    print("headers (GraphiQL's Headers pane):")
    print(f'  {{"Authorization": "Bearer {demo.token}"}}')
    print("query:")
    print(FEED_QUERY)
    return 1 if failed or stuck else 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the running API")
    parser.add_argument("--users", type=int, default=20, help=f"other users (max {len(NAMES)})")
    parser.add_argument("--password", default=DEMO_PASSWORD, help="password of every account")
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for READY")
    args = parser.parse_args(argv)
    args.users = max(1, min(args.users, len(NAMES)))
    try:
        return asyncio.run(seed(args))
    except SeedError as exc:
        print(f"\nseed failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; run it again to finish (it picks up where it stopped)")
        return 130


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
