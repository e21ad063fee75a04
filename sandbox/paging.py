"""Paged lists: `limit` and `continue`, as the real server's storage layer pages them.

Owns the continue token and a page's list metadata (pure functions; the store reads
the page, `Store.list_page`). As staging/src/k8s.io/apiserver/pkg/storage
(continue.go, etcd3/store.go GetList) does it:

- a token is opaque to clients: base64 (URL alphabet, unpadded) of
  `{"v":"meta.k8s.io/v1","rv":<list resourceVersion>,"start":"<next key>"}`, the
  key relative to the listed scope (`<name>\\x00` in a namespace,
  `<namespace>/<name>\\x00` across namespaces);
- every page of one list shows the objects as they were at the first page's
  resourceVersion; a page ends once it holds `limit` matching objects, with a token
  when any key (matching or not) follows; `remainingItemCount` says how many
  objects are left, unless a label or field selector was given (the storage cannot
  count those cheaply);
- a token that does not decode is 400; one whose resourceVersion has left the
  history is 410 Expired, carrying in its own `metadata.continue` a token (`rv`
  -1) that continues from the current state, inconsistently.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from sandbox.resources import ApiError, bad_request

Obj = dict[str, Any]
LATEST = -1  # a token's rv when it continues from the current state

INCONSISTENT_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted "
    "between the time the first chunk was returned and now may show up in the list.")


@dataclass(frozen=True)
class Continue:
    rv: int
    start: str


def item_key(obj: Obj, namespaced_scope: bool) -> str:
    """An object's key below the listed scope, as etcd orders keys."""
    meta = obj.get("metadata") or {}
    if namespaced_scope or not meta.get("namespace"):
        return str(meta.get("name", ""))
    return f"{meta['namespace']}/{meta.get('name', '')}"


def encode(rv: int, start: str) -> str:
    body = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode(token: str) -> Continue:
    """The token's resourceVersion and start key; 400 for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
    except (ValueError, binascii.Error):
        raise bad_request("invalid continue token: continue key is not valid: "
                          "illegal base64 data") from None
    if not isinstance(body, dict) or body.get("v") != "meta.k8s.io/v1":
        raise bad_request("invalid continue token: continue key is not valid: server does "
                          "not recognize this encoded version")
    rv, start = body.get("rv"), body.get("start")
    if not isinstance(rv, int) or rv == 0 or rv < LATEST:
        raise bad_request("invalid continue token: continue key is not valid: incorrect "
                          "encoded start resourceVersion (version meta.k8s.io/v1)")
    if not isinstance(start, str) or not start or start.startswith("/") or ".." in start:
        raise bad_request("invalid continue token: continue key is not valid: encoded "
                          "start key is not valid")
    return Continue(rv, start)


def expired(start: str) -> ApiError:
    """The 410 for a token whose snapshot is gone, with one continuing from now."""
    error = ApiError(410, "Expired", INCONSISTENT_CONTINUE)
    error.list_continue = encode(LATEST, start)
    return error


def list_meta(items: list[Obj], rv: int, *, namespaced_scope: bool, more: bool,
              remaining: int | None) -> Obj:
    """The list metadata to send with `items`: a continue token when keys remain after
    them, and how many objects do when that can be counted (`remaining` not None)."""
    meta: Obj = {"resourceVersion": str(rv)}
    if not more or not items:
        return meta
    meta["continue"] = encode(rv, item_key(items[-1], namespaced_scope) + "\x00")
    if remaining is not None:
        meta["remainingItemCount"] = remaining
    return meta
