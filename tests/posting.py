"""The client side of posting, as a front-end would do it: createPost, upload the bytes
straight to the blob store with the returned target, completeUpload, wait for READY."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import GraphQLClient

CREATE_POST = """
mutation ($input: CreatePostInput!) {
  createPost(input: $input) {
    post { id status caption hashtags author { username } }
    uploads { mediaId method url headers { name value } fields { name value } expiresAt partSize partUrls }
    errors { field message code }
  }
}
"""
COMPLETE = """
mutation ($id: ID!) {
  completeUpload(postId: $id) { post { id status } errors { field message code } }
}
"""
POST = """
query ($id: ID!) {
  post(id: $id) {
    id status failureReason caption hashtags createdAt author { username postCount }
    media {
      id kind width height placeholder durationSeconds videoUrl
      thumb: url(size: THUMB, format: JPEG) thumbWebp: url(size: THUMB, format: WEBP)
      feed: url feedWebp: url(format: WEBP)
      full: url(size: FULL) fullWebp: url(size: FULL, format: WEBP)
    }
  }
}
"""


async def upload(target: dict[str, Any], data: bytes) -> httpx.Response:
    """Send bytes exactly as a client would, following the target's instructions."""
    headers = {h["name"]: h["value"] for h in target["headers"]}
    async with httpx.AsyncClient(timeout=60) as client:
        if target["partUrls"]:
            size = int(target["partSize"])
            response = None
            for index, url in enumerate(target["partUrls"]):
                response = await client.put(url, content=data[index * size : (index + 1) * size])
                response.raise_for_status()
            assert response is not None
            return response
        if target["method"] == "PUT":
            return await client.put(target["url"], content=data, headers=headers)
        fields = {f["name"]: f["value"] for f in target["fields"]}
        return await client.post(target["url"], data=fields, files={"file": ("upload", data)})


async def create_post(
    gql: GraphQLClient,
    token: str,
    files: list[tuple[str, bytes]],
    caption: str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    media = [{"contentType": ct, "byteSize": str(len(data))} for ct, data in files]
    variables = {"caption": caption, "media": media, "idempotencyKey": idempotency_key}
    payload: dict[str, Any] = (await gql(CREATE_POST, token=token, input=variables))["createPost"]
    return payload


async def publish(
    gql: GraphQLClient, token: str, files: list[tuple[str, bytes]], caption: str | None = None
) -> str:
    """createPost, upload every file, completeUpload; returns the post's ID."""
    created = await create_post(gql, token, files, caption)
    assert created["errors"] == [], created["errors"]
    for target, (_, data) in zip(created["uploads"], files, strict=True):
        response = await upload(target, data)
        assert response.status_code in (200, 201, 204), response.text
    completed = (await gql(COMPLETE, token=token, id=created["post"]["id"]))["completeUpload"]
    assert completed["errors"] == [], completed["errors"]
    assert completed["post"]["status"] == "PROCESSING"
    post_id: str = created["post"]["id"]
    return post_id


async def wait_for_post(gql: GraphQLClient, token: str, post_id: str) -> dict[str, Any]:
    """Poll until the worker has finished with the post (READY or FAILED), for up to a minute."""
    async with asyncio.timeout(60):
        while True:
            post: dict[str, Any] = (await gql(POST, token=token, id=post_id))["post"]
            if post["status"] in ("READY", "FAILED"):
                return post
            await asyncio.sleep(0.1)


async def read_public(url: str) -> bytes:
    """Fetch a rendition by its public URL, as a browser would, with no credentials (local
    backend: the API's media route; S3: the bucket, readable under `renditions/` by its
    policy, `infra.storage.bucket_public_read_policy`)."""
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["etag"]
    return response.content
