"""`tuneloop chat`: a quick interactive conversation with a running tuneloop server."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from typing import Any

from tuneloop.cli.output import EXIT_ERROR, EXIT_OK
from tuneloop.client import server_url
from tuneloop.errors import BadRequest, TuneloopError, Unauthorized

DEFAULT_URL = "http://127.0.0.1:8000"
# A model's answer is printed to the operator's terminal, and answers follow what users and documents put in
# the context: escape sequences (ESC, CSI, OSC: clipboard writes, retitling, hidden text) are dropped as
# printed, one control character at a time, so a sequence split across deltas is defused too.
TERMINAL_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
HELP = "commands: /thumbs up|down (feedback on the last answer), /reset (new conversation); Ctrl-D exits"


def register(commands: Any) -> None:
    p = commands.add_parser(
        "chat", help="chat with a running server (streams answers; /thumbs sends feedback)"
    )
    add_server_arguments(p)
    p.add_argument("--model", default="tuneloop", help="`tuneloop` (what the tenant serves) or a version id")
    p.add_argument("--max-tokens", type=int, default=None, help="cap each answer's length")
    p.set_defaults(run=cmd_chat)


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    """--url and --key, for a command that talks to a running server as a tenant's client."""
    p.add_argument("--url", default=None, help=f"server URL (default: TUNELOOP_URL or {DEFAULT_URL})")
    p.add_argument("--key", default=None, help="the tenant's API key (default: TUNELOOP_API_KEY)")


def server_and_key(args: argparse.Namespace) -> tuple[str, str]:
    """The server URL and API key from `add_server_arguments`' flags or their environment variables."""
    key = args.key or os.environ.get("TUNELOOP_API_KEY")
    if not key:
        raise Unauthorized("no API key — pass --key or set TUNELOOP_API_KEY (`tuneloop tenants add NAME`)")
    return server_url(args.url or os.environ.get("TUNELOOP_URL") or DEFAULT_URL), key


def cmd_chat(args: argparse.Namespace) -> int:
    """Read lines from stdin, stream each answer, keep the conversation; Ctrl-D ends it."""
    url, key = server_and_key(args)
    session = ChatSession(url, key, args.model, args.max_tokens)
    interactive = sys.stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - line editing and history for input()
        print(f"chatting with {url} as model {args.model!r}; {HELP}")
    failed = False
    try:
        while True:
            try:
                line = input("> " if interactive else "").strip()
            except EOFError:
                if interactive:
                    print()  # end the line ^D was typed on
                # A script piping lines in learns from the exit code that one of them failed.
                return EXIT_ERROR if failed and not interactive else EXIT_OK
            if line and not session.handle(line):
                failed = True
    finally:
        session.close()


class ChatSession:
    """One conversation: the messages so far and the interaction id of the last answer."""

    def __init__(self, url: str, key: str, model: str, max_tokens: int | None) -> None:
        import openai

        from tuneloop.client import Client

        self.model = model
        self.max_tokens = max_tokens
        self.messages: list[Any] = []  # openai's message params
        self.last_id: str | None = None
        self._openai = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=1)
        self._feedback = Client(url, key, retries=1)

    def handle(self, line: str) -> bool:
        """A slash command or a user message; a failure prints one line, returns False, and the session
        goes on."""
        import httpx
        import openai

        try:
            if line.startswith("/"):
                self._command(line)
            else:
                self._ask(line)
            return True
        except openai.APIStatusError as exc:
            message = exc.body.get("message") if isinstance(exc.body, dict) else None
            print(f"error: {message or exc.message}", file=sys.stderr)
        except openai.APIConnectionError:
            print(
                f"error: cannot reach {self._openai.base_url} — is `tuneloop serve` running?", file=sys.stderr
            )
        except openai.APIError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
        except httpx.HTTPError as exc:
            print(f"error: feedback not sent: {exc}", file=sys.stderr)
        except TuneloopError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
        return False

    def _ask(self, text: str) -> None:
        import openai

        messages: list[Any] = [*self.messages, {"role": "user", "content": text}]
        stream = self._openai.chat.completions.create(
            model=self.model,
            messages=messages,
            stream=True,
            max_tokens=openai.omit if self.max_tokens is None else self.max_tokens,
        )
        parts: list[str] = []
        interaction_id = None
        try:
            for chunk in stream:
                interaction_id = chunk.id
                delta = chunk.choices[0].delta.content if chunk.choices else None
                if delta:
                    parts.append(delta)
                    print(TERMINAL_CONTROL.sub("", delta), end="", flush=True)
        except KeyboardInterrupt:
            # Ctrl-C stops this answer, not the session; the partial answer stays out of the history.
            stream.close()
            print("\n(interrupted)", flush=True)
            return
        except Exception:
            if parts:
                print(flush=True)  # the error line must not run on from the partial answer
            raise
        print(flush=True)
        self.messages = [*messages, {"role": "assistant", "content": "".join(parts)}]
        self.last_id = interaction_id

    def _command(self, line: str) -> None:
        name, _, arg = line.partition(" ")
        if name == "/thumbs":
            value = {"up": 1, "down": -1}.get(arg.strip())
            if value is None:
                raise BadRequest("usage: /thumbs up|down")
            if self.last_id is None:
                raise BadRequest("no answer yet to give feedback on")
            status = self._feedback.feedback(self.last_id, "thumbs", value)
            print(f"feedback {status} on {self.last_id}", flush=True)
        elif name == "/reset":
            self.messages, self.last_id = [], None
            print("new conversation", flush=True)
        else:
            raise BadRequest(f"unknown command {name!r}; {HELP}")

    def close(self) -> None:
        self._openai.close()
        self._feedback.close()
