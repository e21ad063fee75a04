"""`bluegreen status [--watch]`: the status document as text (worker.statusview).

Pure: each part of the picture (live colour and since when, a disagreement between
the cluster's live colour and the records' live release, both colours' Deployments,
the release awaiting promotion, drift, the queue with its running, waiting and
failed jobs, recent releases with failures and their reasons) and colour only on a
terminal. Through real gunicorn and Redis: `status` prints the picture once;
`--watch` redraws it every `--interval` seconds and keeps going (saying so) while the
server cannot be reached.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from proctools import free_port
from web import Gunicorn

from worker.statusview import render

NOW = 1_800_000_000.0
BLUEGREEN = str(Path(sys.executable).parent / "bluegreen")


def doc() -> dict[str, Any]:
    live = {"id": "myapp-v2-green-1", "tag": "v2.0-green", "color": "green"}
    return {
        "apps": {"myapp": {
            "queue": "deploy",
            "live": {"color": "green", "since": NOW - 180, "release": live},
            "colors": {
                "blue": {"exists": True, "release": "myapp-v1-blue-1", "version": "v1.0",
                         "image": "reg/myapp:v1.0", "ready": 0, "desired": 1,
                         "is_ready": False, "live": False},
                "green": {"exists": True, "release": "myapp-v2-green-1", "version": "v2.0",
                          "image": "reg/myapp:v2.0", "ready": 2, "desired": 2,
                          "is_ready": True, "live": True}},
            "awaiting": [{"id": "myapp-v3-blue-1", "tag": "v3.0-blue", "color": "blue",
                          "updated_at": NOW - 60}],
            "drift": [{"kind": "image", "message": "Deployment default/myapp-green runs x"}],
            "snapshot": {"taken_at": NOW - 4, "error": None}},
            "website": {"queue": "deploy", "live": {"color": None},
                        "colors": {"blue": {"exists": False}, "green": {"exists": None}},
                        "awaiting": [], "drift": [], "snapshot": None}},
        "queues": [{"queue": "deploy", "apps": ["myapp", "website"],
                    "worker": {"alive": True, "at": NOW - 3},
                    "running": {"action": "release", "release": "website-r-blue-1",
                                "app": "website", "step": "deploy", "started_at": NOW - 12},
                    "waiting": [{"position": 1, "action": "promote", "release": "myapp-v3",
                                 "app": "myapp", "enqueued_at": NOW - 5}],
                    "failed": [{"action": "rollback", "release": "myapp-v0", "app": "myapp",
                                "ended_at": NOW - 600, "error": "KubeError: boom"}]}],
        "releases": [
            {"id": "myapp-v4-blue-1", "tag": "v4.0-blue", "app": "myapp", "color": "blue",
             "state": "failed", "actor": "github:dev", "duration": 31, "updated_at": NOW - 90,
             "error": "smoke_test: GET /ready answered 503"},
            {"id": "myapp-v2-green-1", "tag": "v2.0-green", "app": "myapp", "color": "green",
             "state": "live", "actor": "github:dev", "duration": 75, "updated_at": NOW - 180}],
    }


def test_the_picture_says_everything_at_a_glance() -> None:
    text = render(doc(), now=NOW)
    lines = text.splitlines()
    assert "myapp  queue deploy  cluster seen 4s ago" in lines
    assert "   LIVE GREEN  since 3m ago: myapp-v2-green-1 (v2.0-green, green)" in lines
    assert ("  blue  idle  v1.0       0/1 ready  myapp-v1-blue-1  reg/myapp:v1.0") in lines
    assert ("  green LIVE  v2.0       2/2 ready  myapp-v2-green-1  reg/myapp:v2.0") in lines
    assert "  awaiting promotion: myapp-v3-blue-1 (v3.0-blue, blue), ready 1m ago" in lines
    assert "  DRIFT: Deployment default/myapp-green runs x" in lines
    assert "  nothing is live" in lines and "  blue  idle  no Deployment" in lines
    assert "deploy (myapp, website)  worker alive, beat 3s ago" in lines
    assert "  running: release website-r-blue-1 (website) step deploy for 12s" in lines
    assert "  1. promote myapp-v3 (myapp), waiting 5s" in lines
    assert "  failed 10m ago: rollback myapp-v0 (myapp): KubeError: boom" in lines
    assert "    why: smoke_test: GET /ready answered 503" in lines
    header = next(line for line in lines if line.startswith("RELEASE"))
    assert header.split() == ["RELEASE", "TAG", "APP", "COLOR", "STATE", "ACTOR", "TOOK",
                              "UPDATED"]
    assert "\x1b[" not in text


def test_a_disagreement_between_cluster_and_records_is_said_plainly() -> None:
    picture = doc()
    picture["apps"]["myapp"]["live"].update(
        records_release={"id": "myapp-v3-blue-1", "tag": "v3.0-blue", "color": "blue"},
        conflict="the default route sends users to green, whose Deployment myapp-green "
                 "carries v2.0-green (myapp-v2-green-1), but the records say v3.0-blue "
                 "(myapp-v3-blue-1) is live on blue")
    lines = render(picture, now=NOW).splitlines()
    assert "   LIVE GREEN  since 3m ago: myapp-v2-green-1 (v2.0-green, green)" in lines
    assert lines[lines.index("   LIVE GREEN  since 3m ago: myapp-v2-green-1 (v2.0-green, green)")
                 + 1] == (
        "  CLUSTER AND RECORDS DISAGREE: the default route sends users to green, whose "
        "Deployment myapp-green carries v2.0-green (myapp-v2-green-1), but the records say "
        "v3.0-blue (myapp-v3-blue-1) is live on blue")
    assert "DISAGREE" not in render(doc(), now=NOW)


def test_colour_only_when_asked() -> None:
    coloured = render(doc(), now=NOW, color=True)
    assert "\x1b[" in coloured
    assert "\x1b[32m" in coloured  # green is green
    assert "\x1b[31m" in coloured  # failures and drift are red


def test_a_dead_worker_and_an_empty_queue() -> None:
    empty = {"apps": {}, "queues": [{"queue": "deploy", "apps": [], "worker": {"alive": False},
                                     "running": None, "waiting": [], "failed": []}],
             "releases": []}
    text = render(empty, now=NOW)
    assert "deploy ()  NO WORKER" in text and "idle, nothing waiting" in text
    assert text.endswith("no releases yet")


# -- the command, through real gunicorn ----------------------------------------------------------


def bluegreen(url: str, *args: str, seconds: float | None = None) -> tuple[int | None, str]:
    """Run `bluegreen status ...`; with `seconds`, interrupt it after that long."""
    env = {**os.environ, "BLUEGREEN_URL": url}
    proc = subprocess.Popen([BLUEGREEN, "status", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if seconds is None:
        out, _ = proc.communicate(timeout=30)
        return proc.returncode, out
    time.sleep(seconds)
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    return None, out


@pytest.mark.usefixtures("redis_url")  # an empty database
def test_status_prints_the_picture_once(web: Gunicorn) -> None:
    code, out = bluegreen(web.url)
    assert code == 0, out
    assert out.startswith("APPS\nmyapp  queue deploy  cluster not seen yet")
    assert "deploy (myapp, website)  NO WORKER" in out


@pytest.mark.usefixtures("redis_url")  # an empty database
def test_watch_redraws_until_interrupted(web: Gunicorn) -> None:
    _, out = bluegreen(web.url, "--watch", "--interval", "0.3", seconds=2.5)
    assert out.count("bluegreen status, every 0.3s (Ctrl-C to stop)") >= 3
    assert out.count("APPS") >= 3


def test_watch_keeps_going_while_the_server_is_away() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    _, out = bluegreen(url, "--watch", "--interval", "0.3", seconds=1.5)
    assert out.count(f"cannot reach {url}") >= 2
    assert "retrying every 0.3s" in out
