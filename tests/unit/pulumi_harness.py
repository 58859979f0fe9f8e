"""Run the real __main__.py under Pulumi mocks and record every registration.

Assertions are made on the recorded registrations after the program has finished, never inside an `.apply`, so a
test cannot pass because its assertions never ran: `ProgramRun.assert_ran()` also checks that resources were seen.
"""

from __future__ import annotations

import asyncio
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "pgpool-ha"
PRIVATE_KEY_HEADER = "-----BEGIN OPENSSH PRIVATE KEY-----"
PRIVATE_KEY_FOOTER = "-----END OPENSSH PRIVATE KEY-----"
SECRET_SIG = rpc._special_sig_key
SECRET_MARK = rpc._special_secret_sig


@dataclass
class Registration:
    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    inputs: dict[str, Any]
    dependencies: list[str]
    additional_secret_outputs: list[str]
    provider: str

    @property
    def parent_name(self) -> str:
        return self.parent.rsplit("::", 1)[-1] if self.parent else ""

    def is_secret(self, key: str) -> bool:
        value = self.inputs.get(key)
        return isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_MARK

    def plain(self, key: str) -> Any:
        return unwrap(self.inputs.get(key))


def unwrap(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_MARK:
            return unwrap(value["value"])
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


@dataclass
class ProgramRun:
    registrations: list[Registration] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)
    error: BaseException | None = None

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]

    def named(self, name: str) -> Registration:
        matches = [r for r in self.registrations if r.name == name]
        assert len(matches) == 1, f"expected one resource named {name}, found {len(matches)}"
        return matches[0]

    def by_urn(self, urn: str) -> Registration:
        return next(r for r in self.registrations if r.urn == urn)

    def assert_ran(self) -> None:
        assert self.error is None, f"the program failed: {self.error!r}"
        assert self.registrations, "the program registered no resource: the test would prove nothing"


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: pulumi.runtime.Mocks, run: ProgramRun) -> None:
        super().__init__(mocks)
        self.run = run

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.run.registrations.append(
                Registration(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    custom=request.custom,
                    inputs=_keep_secrets(request.object),
                    dependencies=list(request.dependencies),
                    additional_secret_outputs=list(request.additionalSecretOutputs),
                    provider=request.provider,
                )
            )
        return response


def _keep_secrets(struct: Any) -> dict[str, Any]:
    """The request's properties as plain JSON, secrets still wrapped with their signature."""
    from google.protobuf import json_format

    return json.loads(json_format.MessageToJson(struct))


class Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ == "random:index/randomPassword:RandomPassword":
            state["result"] = f"generated-{args.name}-" + "x" * 8
        if args.typ == "tls:index/privateKey:PrivateKey":
            state["privateKeyOpenssh"] = (
                f"-----BEGIN OPENSSH PRIVATE KEY-----\n{args.name}\n-----END OPENSSH PRIVATE KEY-----\n"
            )
            state["publicKeyOpenssh"] = f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA{args.name} postgres\n"
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


def stack_config(stack: str) -> dict[str, Any]:
    """Pulumi.yaml defaults overlaid with Pulumi.<stack>.yaml, as the engine hands them to the program."""
    import yaml

    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    values = {key: decl.get("default") for key, decl in project["config"].items() if "default" in decl}
    document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    values.update(document.get("config") or {})
    return values


def run_program(
    stack: str = "dev",
    overrides: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
) -> ProgramRun:
    """Run __main__.py with the stack's config (plus overrides; `secrets` are set as secret config)."""
    values = stack_config(stack)
    for key, value in (overrides or {}).items():
        values[f"{PROJECT}:{key}"] = value
    secret_values = {
        "sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nadmin-key\n-----END OPENSSH PRIVATE KEY-----"
    }
    secret_values.update(secrets or {})
    for key, value in secret_values.items():
        values[f"{PROJECT}:{key}"] = value
    # The engine hands every value as a string; objects and arrays as JSON.
    config = {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items() if v is not None}
    pulumi.runtime.set_all_config(config, secret_keys=[f"{PROJECT}:{k}" for k in secret_values])

    run = ProgramRun()
    pulumi.runtime.settings.ROOT.set(None)
    monitor = RecordingMonitor(Mocks(), run)
    pulumi.runtime.set_mocks(Mocks(), project=PROJECT, stack=stack, preview=False, monitor=monitor)

    exported: dict[str, Any] = {}

    @pulumi.runtime.test
    def program() -> Any:
        original_export = pulumi.export
        pulumi.export = lambda name, value: exported.__setitem__(name, value)  # type: ignore[assignment]
        try:
            runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
        finally:
            pulumi.export = original_export

        async def collect() -> None:
            for name, value in exported.items():
                output = pulumi.Output.from_input(value)
                run.outputs[name] = await output.future()
                if await output.is_secret():
                    run.secret_outputs.add(name)

        return asyncio.ensure_future(collect())

    try:
        program()
    except Exception as exc:  # the test decides whether a failure was expected
        run.error = exc
    return run
