"""Push tasks to a Label Studio server and pull its JSON export, with the `label-studio-sdk` package.

Run it with the Label Studio environment's Python, not the project's: label-studio and
label-studio-sdk pin numpy < 2.3 (through opencv-python-headless) and Django, which clash
with the project's pins, so they live in `.venv-labelstudio/` (`make labelstudio-env`).
This file therefore imports nothing from diplostance:

    .venv-labelstudio/bin/python diplostance/labelstudio/client.py push --url URL --api-key KEY \\
        --title "Round 1" --config ls_config.xml --tasks tasks.json
    .venv-labelstudio/bin/python diplostance/labelstudio/client.py pull --url URL --api-key KEY \\
        --project 1 --out export.json

The API key is a personal access token or a legacy token (Account & Settings in the UI;
LABEL_STUDIO_API_KEY is read when --api-key is not given).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


def connect(url: str, api_key: str | None):
    from label_studio_sdk import LabelStudio

    key = api_key or os.environ.get("LABEL_STUDIO_API_KEY")
    if not key:
        raise SystemExit("error: give --api-key or set LABEL_STUDIO_API_KEY")
    return LabelStudio(base_url=url, api_key=key)


def push(client, title: str, config: str, tasks: list) -> dict:
    """A new project with the labelling config, and the tasks with their pre-annotations."""
    project = client.projects.create(title=title, label_config=config)
    imported = client.projects.import_tasks(id=project.id, request=tasks, return_task_ids=True)
    return {"project": project.id, "tasks": len(imported.task_ids or [])}


def pull(client, project: int, out: Path) -> int:
    """The project's JSON export (every task, annotated or not), written whole or not at all."""
    chunks = client.projects.exports.download_sync(id=project, export_type="JSON", download_all_tasks=True)
    data = b"".join(chunks)
    handle, temporary = tempfile.mkstemp(prefix=f".tmp-{out.name}-", dir=out.parent)
    with os.fdopen(handle, "wb") as f:
        f.write(data)
    os.replace(temporary, out)
    return len(json.loads(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["push", "pull"])
    parser.add_argument("--url", default=os.environ.get("LABEL_STUDIO_URL", "http://localhost:8080"))
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--title", default="diplostance", help="push: the new project's title")
    parser.add_argument("--config", type=Path, help="push: labelling config (python -m diplostance labelstudio config)")
    parser.add_argument("--tasks", type=Path, help="push: tasks (python -m diplostance labelstudio export)")
    parser.add_argument("--project", type=int, help="pull: project id")
    parser.add_argument("--out", type=Path, help="pull: where to write the JSON export")
    args = parser.parse_args(argv)
    client = connect(args.url, args.api_key)
    if args.command == "push":
        if not (args.config and args.tasks):
            parser.error("push needs --config and --tasks")
        tasks = json.loads(args.tasks.read_text(encoding="utf-8"))
        print(json.dumps(push(client, args.title, args.config.read_text(encoding="utf-8"), tasks)))
    else:
        if args.project is None or args.out is None:
            parser.error("pull needs --project and --out")
        print(
            json.dumps({"project": args.project, "tasks": pull(client, args.project, args.out), "out": str(args.out)})
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
