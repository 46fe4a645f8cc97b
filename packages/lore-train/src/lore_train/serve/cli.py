"""The ``lore-serve`` command: load an exported personalized reward model and serve it.

    lore-serve --model exported/ --store users.db --token-file tokens.txt

Thin on purpose: flags -> `ServeLimits`, `PersonalReward.from_pretrained`,
`create_app`, uvicorn on a socket bound here (so ``--port 0`` can print the
port it got). Binds 127.0.0.1 unless ``--host`` says otherwise, and warns when
a non-loopback address is served without ``--token-file``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from lore_datasets.runtime.cli import ArgumentParser, console_entry, resolve_device, run_cli

from ..personal_reward import PersonalReward
from .auth import TokenTable
from .limits import ServeLimits
from .page import load_questions

PROG = "lore-serve"
LIMIT_HELP = {
    "max_body_bytes": "largest request body, bytes (413 above)",
    "max_responses": "most responses, candidates, queries or comparisons in one request",
    "max_text_chars": "longest prompt, response or chat message, characters",
    "max_user_chars": "longest user id, characters",
    "max_suggestions": "largest n of /suggest",
    "max_batch_tokens": "tokens in one batched backbone forward",
    "max_wait_ms": "how long a forward waits for more conversations to batch, ms",
}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Serve a personalized reward model exported by "
                       "`lore-export hf` over HTTP: OpenRLHF's /get_reward, scoring, online "
                       "adaptation of users from their comparisons, pair suggestions, and a "
                       "page at / that elicits a new user's preferences.")
    p.add_argument("--model", required=True, help="the exported model directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    p.add_argument("--store", default="users.db",
                   help="SQLite file of users and their answers (created when missing)")
    p.add_argument("--token-file", help="bearer tokens, one 'TOKEN user1,user2' or 'TOKEN *' "
                   "a line; without it the server needs no authentication")
    p.add_argument("--questions", help="JSON lines {\"prompt\", \"candidates\"} for the page")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    defaults = ServeLimits()
    for f in fields(ServeLimits):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(getattr(defaults, f.name)),
                       default=getattr(defaults, f.name),
                       help=f"{LIMIT_HELP[f.name]} (default: %(default)s)")
    return p


def _serve(args: argparse.Namespace) -> int:
    try:
        from . import app as app_module
        from . import server
    except ImportError as err:
        raise ImportError(f"{err.name or err} is missing: lore-serve needs the serve extra "
                          "(pip install 'lore-train[serve]')") from None
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a server's log is not a terminal

    limits = ServeLimits(**{f.name: getattr(args, f.name) for f in fields(ServeLimits)})
    tokens = TokenTable.load(args.token_file) if args.token_file else None
    questions = load_questions(args.questions) if args.questions else None
    sock = server.bind(args.host, args.port)  # before the model: a busy port fails fast
    try:
        reward = PersonalReward.from_pretrained(args.model, device=resolve_device(args.device),
                                                unknown_user="prior",
                                                max_batch_tokens=limits.max_batch_tokens)
        app = app_module.create_app(reward, store=args.store, limits=limits, tokens=tokens,
                                    questions=questions)
    except BaseException:
        sock.close()
        raise
    if tokens is None and not server.is_loopback(args.host):
        print(f"{PROG}: warning: serving {args.host} without --token-file: anyone who can "
              "reach it can read and change every user", file=sys.stderr)
    print(f"{PROG}: serving {server.url_of(sock)} (K={reward.K}, "
          f"{len(reward.user_ids)} users, store {args.store})", file=sys.stderr, flush=True)
    server.serve(app, sock, log_level=args.log_level)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _serve(args), expected=(ImportError,))


def entry() -> int:
    """The `lore-serve` console script."""
    return console_entry(main)
