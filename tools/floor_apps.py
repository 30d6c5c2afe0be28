"""Ray Serve "floor" applications for ``python -m tools ceiling``: the cheapest apps Serve can run
behind the same HTTP route as the real one (``POST /v1/answer``), written like the real app
(``@serve.deployment`` with default options, FastAPI through ``@serve.ingress``, handles
injected through ``__init__`` with ``.bind(...)``).

Every deployment keeps Serve's default options except ``ray_actor_options={"num_cpus": 0}``:
with the default of one CPU per replica the chain's three replicas cannot all be scheduled on a
2-CPU node (the real app's Ingress and Packer ask for 0 CPUs too). The builders' ``args`` may
set ``max_ongoing_requests`` for every deployment (Serve's default is 5; the real Ingress uses
1024).

* ``echo_app``  — one FastAPI deployment that returns the parsed JSON body (a list body returns
  the list): HTTP -> proxy -> one replica, no handle call.
* ``chain_app`` — a FastAPI deployment that calls deployment A through its handle, A calls B
  through its handle, B returns the body: the real app's shape (ingress + two handle hops).

Used through ``import_path``: ``tools.floor_apps:echo_app`` / ``...:chain_app``.
(No ``from __future__ import annotations`` here: FastAPI inside ``serve.ingress`` must see
``Request`` as a class, not a string, or every POST is a 422.)
"""

from typing import Any

from fastapi import FastAPI, Request
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

echo_api = FastAPI(title="floor-echo")
chain_api = FastAPI(title="floor-chain")


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(echo_api)
class EchoIngress:
    """Returns the request's JSON body unchanged."""

    @echo_api.post("/v1/answer")
    async def answer(self, request: Request) -> Any:
        """The parsed JSON body (object or list), re-encoded by FastAPI."""
        return await request.json()

    @echo_api.get("/healthz")
    async def healthz(self) -> dict:
        """Always ready once the replica runs."""
        return {"status": "ok"}


@serve.deployment(ray_actor_options={"num_cpus": 0})
class ChainB:
    """The last hop: returns what it is given."""

    async def __call__(self, body: Any) -> Any:
        """``body`` unchanged."""
        return body


@serve.deployment(ray_actor_options={"num_cpus": 0})
class ChainA:
    """The middle hop: forwards to B through its handle."""

    def __init__(self, b: DeploymentHandle) -> None:
        self.b = b

    async def __call__(self, body: Any) -> Any:
        """B's answer for ``body`` (i.e. ``body``)."""
        return await self.b.remote(body)


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(chain_api)
class ChainIngress:
    """HTTP ingress that answers through the chain A -> B."""

    def __init__(self, a: DeploymentHandle) -> None:
        self.a = a

    @chain_api.post("/v1/answer")
    async def answer(self, request: Request) -> Any:
        """The parsed JSON body, after a round trip through A and B."""
        return await self.a.remote(await request.json())

    @chain_api.get("/healthz")
    async def healthz(self) -> dict:
        """Ready once the chain answers end to end."""
        await self.a.remote(None)
        return {"status": "ok"}


def floor_options(args: dict | None) -> dict:
    """Deployment options from builder ``args``: only ``max_ongoing_requests`` (an int >= 1)."""
    args = dict(args or {})
    unknown = set(args) - {"max_ongoing_requests"}
    if unknown:
        raise ValueError(f"floor apps take only max_ongoing_requests, got {sorted(unknown)}")
    value = args.get("max_ongoing_requests")
    if value is None:
        return {}
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_ongoing_requests must be an int >= 1, got {value!r}")
    return {"max_ongoing_requests": value}


def echo_app(args: dict | None = None) -> Application:
    """Application builder for the echo floor; ``args`` may set ``max_ongoing_requests``."""
    return EchoIngress.options(**floor_options(args)).bind()


def chain_app(args: dict | None = None) -> Application:
    """Application builder for the two-hop chain floor; ``args`` may set
    ``max_ongoing_requests`` (for all three deployments)."""
    opts = floor_options(args)
    return ChainIngress.options(**opts).bind(
        ChainA.options(**opts).bind(ChainB.options(**opts).bind())
    )
