"""The original study's workflow on the simulated network, end to end:

1. backfill the study users' own likes (stage1_likes.yaml);
2. list the liked posts' URIs, and backfill only those posts (stage2_liked_posts.yaml:
   the derived source finds their authors, the URI filter keeps the liked posts);
3. dispatch the posts to a classifier webhook (dispatch_classifier.yml), twice: the
   second run sends nothing new.

Fakenet's likes point at made-up accounts outside it, so stage 2 ends with every author
not_found there; stage2_fakenet_standin.yaml then backfills the other accounts' posts
so that step 3 has posts to send (on the real network, step 3 reads stage 2's dataset).

Run from the repository: python examples/two_stage_study/run_study.py [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import pyarrow.dataset as ds
from aiohttp import web

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-c", "from bsky_backfill.cli import main; main()"]
STUDY_USERS = 12


def cli(*args: str, cwd: Path) -> None:
    """Run one bsky-backfill command; stop the walkthrough if it fails."""
    print(f"$ bsky-backfill {' '.join(args)}", flush=True)
    done = subprocess.run([*CLI, *args], cwd=cwd)
    if done.returncode != 0:
        raise SystemExit(f"bsky-backfill {args[0]} exited {done.returncode}")


def from_template(name: str, out: Path, **values: str) -> None:
    text = (HERE / name).read_text()
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    (out / name).write_text(text)


async def accounts(hosts: list[str]) -> list[str]:
    """Every account of the network (listRepos on each host)."""
    async with aiohttp.ClientSession() as session:
        dids: list[str] = []
        for host in hosts:
            async with session.get(f"{host}/xrpc/com.atproto.sync.listRepos") as answer:
                dids += [repo["did"] for repo in (await answer.json())["repos"]]
    return dids


def liked_post_uris(out: Path) -> list[str]:
    table = ds.dataset(out / "data/study_likes/records", partitioning="hive").to_table(
        columns=["subject_uri"]
    )
    uris = {u for u in table.column("subject_uri").to_pylist() if "/app.bsky.feed.post/" in u}
    return sorted(uris)


async def main(out: Path) -> None:
    fakenet = await asyncio.create_subprocess_exec(
        *CLI,
        "fakenet",
        "--hosts",
        "3",
        "--accounts",
        "120",
        "--seed",
        "7",
        stdout=asyncio.subprocess.PIPE,
    )
    assert fakenet.stdout is not None
    network = json.loads(await fakenet.stdout.readline())
    received: Counter[tuple[str, str]] = Counter()

    async def classify(request: web.Request) -> web.Response:
        body = await request.json()
        received.update((item["uri"], item["cid"]) for item in body["items"])
        return web.json_response({"labels": len(body["items"])})

    app = web.Application()
    app.router.add_post("/classify", classify)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        everyone = await accounts(network["hosts"])
        users, others = everyone[:STUDY_USERS], everyone[STUDY_USERS:]
        (out / "study_users.txt").write_text("\n".join(users) + "\n")
        (out / "other_users.txt").write_text("\n".join(others) + "\n")
        plc = network["plc"]
        for name in ("stage1_likes.yaml", "stage2_liked_posts.yaml", "stage2_fakenet_standin.yaml"):
            from_template(name, out, plc=plc)
        from_template(
            "dispatch_classifier.yml",
            out,
            classifier=f"http://127.0.0.1:{port}/classify",
            dataset="./data/liked_posts_standin",
        )
        await asyncio.to_thread(cli, "run", "stage1_likes.yaml", cwd=out)
        liked = liked_post_uris(out)
        (out / "liked_posts.txt").write_text("\n".join(liked) + "\n")
        print(f"{len(users)} study users liked {len(liked)} posts", flush=True)
        await asyncio.to_thread(cli, "run", "stage2_liked_posts.yaml", cwd=out)
        await asyncio.to_thread(cli, "run", "stage2_fakenet_standin.yaml", cwd=out)
        for _ in range(2):
            await asyncio.to_thread(cli, "dispatch", "dispatch_classifier.yml", cwd=out)
        twice = sum(n - 1 for n in received.values())
        print(f"classifier received {len(received)} posts ({twice} twice)", flush=True)
    finally:
        await runner.cleanup()
        fakenet.terminate()
        await fakenet.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("two-stage-study"))
    folder = parser.parse_args().out.resolve()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    asyncio.run(main(folder))
