"""`python -m mochi_app`: the web process, the worker, one-off renders without a queue, accounts, backups."""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from mochi_app.accounts import LOCAL_ACCOUNT
from mochi_app.config import PRIVATE_UMASK, Settings, SettingsError
from mochi_app.disk import check_writable
from mochi_app.logs import configure_logging
from mochi_app.schemas import GenerationRequest, InvalidRequest

if TYPE_CHECKING:
    from mochi_app.accounts import AccountStore

log = logging.getLogger("mochi_app")

USAGE_ERROR = 2
RUNTIME_ERROR = 1
CANNOT_RUN_HERE = 2  # a worker whose model cannot run on this host; app.py does not restart it


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (exit 2) instead of usage plus error."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m mochi_app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    commands.add_parser("serve", help="run the web process alone (page, REST, Gradio API) against the queue")

    worker = commands.add_parser("worker", help="take jobs from the queue and render them (one per GPU)")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")

    accounts = commands.add_parser("accounts", help="create, list and revoke accounts, their API keys and budgets")
    actions = accounts.add_subparsers(dest="action", required=True, parser_class=_Parser)
    create = actions.add_parser("create", help="a new account; prints its API key (shown only once) last")
    create.add_argument("name", help="1-40 lowercase letters, digits, '-' or '_'")
    actions.add_parser("list", help="the accounts, oldest first")
    webhook = actions.add_parser("webhook-secret", help="the account's webhook signing secret (made on first use)")
    webhook.add_argument("name", help=f"an account's name, or {LOCAL_ACCOUNT!r} for the local owner")
    webhook.add_argument("--rotate", action="store_true", help="a new secret; the old one also signs for a day")
    revoke = actions.add_parser("revoke", help="stop an account's key from working (its jobs stay)")
    revoke.add_argument("name")
    budget = actions.add_parser("set-budget", help="the GPU-seconds an account may use in any 24 h")
    budget.add_argument("name", help=f"an account's name, {LOCAL_ACCOUNT!r}, or a guest's or Hugging Face id")
    budget.add_argument("seconds", type=int, help="GPU-seconds in 24 h; 0 for unlimited")

    backup = commands.add_parser("backup", help="write every job record and account to one snapshot file")
    backup.add_argument("target", help="a file's path, or s3://BUCKET/KEY (boto3's settings find the store)")
    restore = commands.add_parser("restore", help="put a snapshot back onto an empty queue server")
    restore.add_argument("source", help="a file's path, or s3://BUCKET/KEY")

    generate = commands.add_parser("generate", help="render one prompt to one MP4 in this process (no queue)")
    generate.add_argument("prompt", help="what the video should show")
    generate.add_argument("--negative-prompt", help="what it should not show")
    generate.add_argument("--num-frames", type=int, help="frames to render; snapped to 6k+1 (default 85)")
    generate.add_argument("--height", type=int, help="pixels, a multiple of 16 (default 480)")
    generate.add_argument("--width", type=int, help="pixels, a multiple of 16 (default 848)")
    generate.add_argument("--num-inference-steps", type=int, help="denoising steps (default 64)")
    generate.add_argument("--guidance-scale", type=float, help="classifier-free guidance, 0-20 (default 4.5)")
    generate.add_argument("--seed", type=int, help="0 to 2**32-1 (default random)")
    generate.add_argument("--fps", type=int, help="frames per second of the MP4 (default 30)")
    generate.add_argument("--out", type=Path, default=Path("mochi.mp4"), help="where to write the MP4")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging()
    try:
        settings = Settings.from_env()
        if args.command in {"serve", "worker"}:
            os.umask(PRIVATE_UMASK)
            check_writable(settings)
    except SettingsError as exc:
        parser.exit(USAGE_ERROR, f"{parser.prog}: error: {exc}\n")
    if args.command == "serve":
        return _serve(settings)
    if args.command == "accounts":
        return _accounts(parser, settings, args)
    if args.command == "worker":
        return _worker(settings, args.burst)
    if args.command in {"backup", "restore"}:
        return _backup_or_restore(parser, settings, args)
    return _generate(parser, settings, args)


def _serve(settings: Settings) -> int:
    from mochi_app.connections import QueueUnavailable
    from mochi_app.web import serve

    try:
        serve(settings)
    except QueueUnavailable as exc:
        log.error("%s", exc)
        return RUNTIME_ERROR
    except SettingsError as exc:  # nobody could sign in; a guest secret that is not ours
        log.error("%s", exc)
        return USAGE_ERROR
    return 0


def _accounts(parser: argparse.ArgumentParser, settings: Settings, args: argparse.Namespace) -> int:
    """Reaches the same server as a running app.py: MOCHI_REDIS_URL, or the embedded one's recorded URL."""
    from mochi_app.accounts import AccountError, AccountStore
    from mochi_app.connections import QueueUnavailable, connect
    from mochi_app.webhooks import WebhookSecrets

    try:
        store = AccountStore(connect(settings))
    except QueueUnavailable as exc:
        log.error("%s", exc)
        return RUNTIME_ERROR
    try:
        if args.action == "create":
            account, key = store.create(args.name)
            print(f"created account {account.name}; its API key, shown only this once:")
            print(key)
        elif args.action == "webhook-secret":
            if args.name != LOCAL_ACCOUNT and store.get(args.name) is None:
                raise AccountError(f"no account named {args.name!r}")
            made = WebhookSecrets(store.redis).ensure(args.name, rotate=args.rotate)
            if made.previous and args.rotate:
                print(f"rotated the webhook secret of {args.name}; the old one also signs deliveries for 24 h")
            print(made.current)
        elif args.action == "revoke":
            store.revoke(args.name)
            print(f"revoked the key of account {args.name}")
        elif args.action == "set-budget":
            _set_budget(store, settings, args.name, args.seconds)
        else:
            for account in store.list():
                state = "revoked" if account.revoked_at is not None else "active"
                created = time.strftime("%Y-%m-%d %H:%M", time.localtime(account.created_at))
                print(f"{account.name}\t{state}\tcreated {created}")
    except AccountError as exc:
        parser.exit(USAGE_ERROR, f"{parser.prog} accounts: error: {exc}\n")
    return 0


def _set_budget(store: AccountStore, settings: Settings, name: str, seconds: int) -> None:
    from mochi_app.accounts import FREE_ACCOUNT_PREFIXES, AccountError
    from mochi_app.budgets import Budgets

    if name != LOCAL_ACCOUNT and not name.startswith(FREE_ACCOUNT_PREFIXES) and store.get(name) is None:
        raise AccountError(f"no account named {name!r}")
    if seconds < 0:
        raise AccountError(f"a budget is 0 (unlimited) or more GPU-seconds, got {seconds}")
    budgets = Budgets(store.redis, settings)
    budgets.set_daily(name, seconds)
    left = budgets.balance(name).left_gpu_s
    allowance = "unlimited GPU time" if seconds == 0 else f"{seconds} GPU-seconds in any 24 h ({left:.0f} left now)"
    print(f"account {name} may now use {allowance}")


def _backup_or_restore(parser: argparse.ArgumentParser, settings: Settings, args: argparse.Namespace) -> int:
    """Against the same server as a running app.py. A restore goes only onto an empty server."""
    from mochi_app.connections import QueueUnavailable, connect
    from mochi_app.queue import JobQueue
    from mochi_app.snapshots import Snapshot, SnapshotUnusable, place_of, restore_snapshot, take_snapshot
    from mochi_app.storage import StorageUnusable

    try:
        redis = connect(settings)
        if args.command == "backup":
            place, name = place_of(args.target)
            snapshot = take_snapshot(redis, settings.data_dir)
            place.write(name, snapshot.encode())
            print(f"wrote {len(snapshot.records)} job(s) and {len(snapshot.accounts)} account(s) to {args.target}")
            return 0
        place, name = place_of(args.source)
        data = place.read(name)
        if data is None:
            raise SnapshotUnusable(f"there is no snapshot at {args.source}")
        restored = restore_snapshot(JobQueue(redis, settings), Snapshot.decode(data), settings.data_dir)
    except (QueueUnavailable, StorageUnusable, OSError) as exc:
        log.error("%s", exc)
        return RUNTIME_ERROR
    except SnapshotUnusable as exc:
        parser.exit(USAGE_ERROR, f"{parser.prog} {args.command}: error: {exc}\n")
    print(f"restored {restored.jobs} job(s) ({restored.requeued} to run again) and {restored.accounts} account(s)")
    return 0


def _worker(settings: Settings, burst: bool) -> int:
    """Exit 2 (CANNOT_RUN_HERE) when the model cannot run on this host: restarting would not help."""
    from mochi_app.connections import QueueUnavailable
    from mochi_app.download import HubUnreachable
    from mochi_app.loader import ModelUnavailable
    from mochi_app.storage import StorageUnusable
    from mochi_app.worker import run_worker

    try:
        run_worker(settings, burst=burst)
    except (QueueUnavailable, HubUnreachable, StorageUnusable) as exc:  # may pass: app.py starts the worker again
        log.error("%s", exc)
        return RUNTIME_ERROR
    except ModelUnavailable as exc:
        log.error("worker cannot start: %s", exc)
        return CANNOT_RUN_HERE
    return 0


def _generate(parser: argparse.ArgumentParser, settings: Settings, args: argparse.Namespace) -> int:
    from mochi_app.download import HubUnreachable
    from mochi_app.loader import ModelUnavailable, load_renderer
    from mochi_app.renderer import PromptTooLong
    from mochi_app.video import write_mp4

    names = (
        *("prompt", "negative_prompt", "num_frames", "height", "width"),
        *("num_inference_steps", "guidance_scale", "seed", "fps"),
    )
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    try:
        request = GenerationRequest.parse(given, settings.limits)
    except InvalidRequest as exc:
        parser.exit(USAGE_ERROR, f"{parser.prog} generate: error: {exc}\n")
    if request.rendered_num_frames != request.num_frames:
        log.info(
            "num_frames %d snapped to %d (Mochi renders 6k+1 frames)", request.num_frames, request.rendered_num_frames
        )
    try:
        renderer = load_renderer(settings)
        rendering = renderer.render(request, on_step=lambda step, total: log.info("step %d/%d", step, total))
    except (PromptTooLong, ModelUnavailable) as exc:
        parser.exit(USAGE_ERROR, f"{parser.prog} generate: error: {exc}\n")
    except HubUnreachable as exc:
        parser.exit(RUNTIME_ERROR, f"{parser.prog} generate: error: {exc}\n")
    out = args.out.expanduser().absolute()
    write_mp4(rendering.frames, out, request.fps)
    log.info("seed %d, %d frames at %dx%d", request.seed, len(rendering.frames), request.width, request.height)
    print(out)
    return 0
