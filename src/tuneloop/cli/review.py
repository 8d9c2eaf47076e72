"""`tuneloop review tasks|queue|add|agreement`: human review tasks, their queues and reviewers' agreement."""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path
from typing import Any

from tuneloop.cli.admin import open_capture, open_store
from tuneloop.errors import BadRequest
from tuneloop.store.repository import TenantStore
from tuneloop.user_files import read_limited

MAX_GUIDELINES_BYTES = 20_000
# TaskIn's fields whose flag has another name, so an error names the flag that was typed.
TASK_FLAGS = {"name": "create", "assignment_minutes": "minutes"}


def register(commands: Any) -> None:
    group = commands.add_parser("review", help="human review tasks, queues and agreement")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("tasks", help="list a tenant's review tasks, or --create one")
    p.add_argument("--tenant", required=True)
    p.add_argument("--create", metavar="NAME", help="create a task with this name")
    p.add_argument("--kind", choices=["pairwise", "rubric", "correction"], default="pairwise")
    p.add_argument("--guidelines", type=Path, metavar="FILE", help="text file shown beside every item")
    p.add_argument("--overlap", type=int, default=2, help="reviewers who judge each item (default 2)")
    p.add_argument("--minutes", type=int, default=30, help="how long a reviewer holds an item (default 30)")
    p.set_defaults(run=cmd_tasks)
    p = actions.add_parser("queue", help="show a task's queue; --fill N adds the N most useful items")
    p.add_argument("--tenant", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--fill", type=int, default=0, metavar="N", help="queue up to N items by active learning")
    p.add_argument("--days", type=int, default=14, help="look at interactions of the last DAYS (default 14)")
    p.set_defaults(run=cmd_queue)
    p = actions.add_parser("add", help="queue an interaction (or a pair of them) by hand")
    p.add_argument("interaction")
    p.add_argument("--tenant", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--other", metavar="INTERACTION", help="for a pairwise task: the second answer")
    p.set_defaults(run=cmd_add)
    p = actions.add_parser("agreement", help="Krippendorff's alpha per task and reviewer, as JSON")
    p.add_argument("--tenant", required=True)
    p.add_argument("--task", help="one task (default: every task)")
    p.set_defaults(run=cmd_agreement)


def _tenant(name: str) -> TenantStore:
    store = open_store()
    return store.for_tenant(store.tenant_by_name(name))


def _guidelines(path: Path | None) -> str | None:
    if path is None:
        return None
    # Regular files only, read up to the limit: /dev/zero or a FIFO would otherwise fill memory or hang.
    data = read_limited(path, MAX_GUIDELINES_BYTES, f"--guidelines {path}")
    try:
        return data.decode("utf-8-sig")  # an editor's byte order mark is no character of the text
    except UnicodeDecodeError:
        raise BadRequest(f"--guidelines {path}: not UTF-8 text") from None


def cmd_tasks(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from tuneloop.review.tasks import TaskIn, create_task, list_tasks, queue_counts, redact_guidelines

    tenant = _tenant(args.tenant)
    if args.create:
        try:
            spec = TaskIn(name=args.create, kind=args.kind, guidelines=_guidelines(args.guidelines),
                          overlap=args.overlap, assignment_minutes=args.minutes)  # fmt: skip
        except ValidationError as exc:
            err = exc.errors()[0]
            raise BadRequest(f"--{TASK_FLAGS.get(err['loc'][0], err['loc'][0])}: {err['msg']}") from None
        spec = redact_guidelines(spec, open_capture().redactor, tenant)
        task = create_task(tenant, spec, actor="cli")
        print(f"created review task {task.id} ({task.kind}, {task.overlap} reviewers per item)")
        return 0
    tasks = list_tasks(tenant)
    if not tasks:
        print(f"no review tasks yet: `tuneloop review tasks --tenant {args.tenant} --create NAME --kind K`")
    for task in tasks:
        c = queue_counts(tenant, task)
        print(f"{task.id}\t{task.kind}\toverlap {task.overlap}\t{c['waiting']} waiting, {c['done']} done, "
              f"{c['labels']} labels")  # fmt: skip
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    from tuneloop.config import Settings, tenant_policy
    from tuneloop.review.queue import fill, load_judge
    from tuneloop.review.tasks import get_task, queue_counts
    from tuneloop.signals.policy import RewardPolicy

    if args.fill < 0 or not 1 <= args.days <= 365:
        raise BadRequest("--fill takes a count of 0 or more, --days 1 to 365")
    tenant = _tenant(args.tenant)
    task = get_task(tenant, args.task)
    if args.fill:
        settings = Settings()
        policy = tenant_policy(settings.home, args.tenant, RewardPolicy)
        scorer = load_judge(tenant, settings)
        added = fill(tenant, task, policy, limit=args.fill, actor="cli", scorer=scorer, days=args.days)
        reasons: dict[str, int] = {}
        for item in added:
            reasons[item.reason] = reasons.get(item.reason, 0) + 1
        ranked = (
            "by the reward model and the users' signals" if scorer else "by users' signals (no judge yet)"
        )
        print(f"queued {len(added)} items {ranked}: {json.dumps(reasons)}")
    c = queue_counts(tenant, task)
    print(f"{task.id}: {c['waiting']} items waiting, {c['done']} done, {c['labels']} labels")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    from tuneloop.review.tasks import add_items, get_task

    tenant = _tenant(args.tenant)
    task = get_task(tenant, args.task)
    stored = partial(open_capture().reference, tenant)  # the id as the app sent it, or as stored
    typed = [i for i in (args.interaction, args.other) if i]
    sent = {stored(i): i for i in typed}  # errors name the ids typed, not their stored `ref-` hashes
    item = (stored(args.interaction), args.other and stored(args.other), "manual", 1.0)
    added = add_items(tenant, task, [item], actor="cli", sent=sent)
    print(f"queued {added[0].id}" if added else f"{args.interaction} is queued in {task.id} already")
    return 0


def cmd_agreement(args: argparse.Namespace) -> int:
    from tuneloop.review.agreement import task_agreement
    from tuneloop.review.tasks import get_task, list_tasks

    tenant = _tenant(args.tenant)
    tasks = [get_task(tenant, args.task)] if args.task else list_tasks(tenant)
    print(json.dumps([task_agreement(tenant, t) for t in tasks], indent=2))
    return 0
