"""The HTTP surface of lore-serve: a Starlette app whose routes parse, authorise and
call `RewardService`.

Every route goes through `_endpoint`, which is why the promises hold for all
of them at once: a missing or wrong bearer token is a 401 before the body is
read, a body over the limit a 413, a bad field a 4xx ``{"error": "..."}``
naming it, and anything unexpected a 500 ``{"error": "internal error"}`` (the
traceback goes to the server log, never to the client). Each request is
counted and timed under its route template.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from . import schema
from .auth import EVERYONE, Scope, TokenTable
from .limits import ServeLimits
from .metrics import ServeMetrics
from .page import Question, render_page
from .schema import RequestError
from .service import RewardService
from .store import UserStore

log = logging.getLogger("lore_serve")
Handler = Callable[[Request, Scope], Awaitable[Any]]


async def read_body(request: Request, limit: int) -> dict[str, Any]:
    """The JSON object of the body, refusing more than ``limit`` bytes (413) as it streams."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body is {declared} bytes, over max_body_bytes={limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body is over max_body_bytes={limit}")
        chunks.append(chunk)
    return schema.parse_json(b"".join(chunks))


def _allow(scope: Scope, *users: str) -> None:
    denied = scope.first_denied(users)
    if denied is not None:
        raise RequestError(403, f"this token may not use user {denied!r}")


def create_app(reward: Any, *, store: str | Path, limits: ServeLimits | None = None,
               tokens: TokenTable | None = None, questions: list[Question] | None = None,
               on_batch: Callable[[int, int, float], None] | None = None) -> Starlette:
    """The lore-serve app around a loaded `PersonalReward`.

    ``store``: the SQLite file of users (created when missing; its users are
    refitted into ``reward`` now). ``tokens``: None serves without
    authentication (loopback use). ``questions``: what the page at ``/`` asks.
    ``on_batch`` is told of every backbone forward (benchmarks use it).
    """
    limits = limits or ServeLimits()
    user_store = UserStore(store, reward.K)
    metrics = ServeMetrics(lambda: service.n_users())

    def batch_seen(conversations: int, tokens_: int, seconds: float) -> None:
        metrics.observe_batch(conversations, tokens_, seconds)
        if on_batch is not None:
            on_batch(conversations, tokens_, seconds)

    service = RewardService(reward, user_store, limits, on_batch=batch_seen)
    page = render_page(reward.K, questions, auth=tokens is not None)

    def _endpoint(route: str, handler: Handler, *, public: bool = False
                  ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            start = time.perf_counter()
            try:
                scope = EVERYONE
                if tokens is not None and not public:
                    found = tokens.scope(request.headers.get("authorization"))
                    if found is None:
                        raise RequestError(401, "missing or invalid 'Authorization: Bearer' token")
                    scope = found
                result = await handler(request, scope)
                response = result if isinstance(result, Response) else JSONResponse(result)
            except RequestError as err:
                response = JSONResponse({"error": err.message}, status_code=err.status,
                                        headers={"WWW-Authenticate": "Bearer"}
                                        if err.status == 401 else None)
            except Exception:
                log.exception("%s %s failed", request.method, route)
                response = JSONResponse({"error": "internal error"}, status_code=500)
            metrics.observe_request(route, request.method, response.status_code,
                                    time.perf_counter() - start)
            return response
        return run

    def user_param(request: Request) -> str:
        return schema.user_id(request.path_params["user"], "user", limits)

    async def get_reward(request: Request, scope: Scope) -> dict[str, Any]:
        body = await read_body(request, limits.max_body_bytes)
        prompts, responses, users = schema.reward_queries(body, limits)
        _allow(scope, *users)
        rewards, _ = await service.score(users, prompts, responses)
        return {"rewards": rewards, "scores": rewards, "extra_logs": {}}

    async def score(request: Request, scope: Scope) -> dict[str, Any]:
        body = await read_body(request, limits.max_body_bytes)
        user = schema.user_id(schema.required(body, "user"), "user", limits)
        prompt = schema.prompt(schema.required(body, "prompt"), "prompt", limits)
        responses = schema.text_list(body, "responses", limits)
        return_std = schema.flag(body, "return_std")
        _allow(scope, user)
        rewards, std = await service.score([user] * len(responses), [prompt] * len(responses),
                                           responses, return_std)
        return {"user": user, "rewards": rewards, **({"std": std} if return_std else {})}

    async def comparisons(request: Request, scope: Scope) -> dict[str, Any]:
        user = user_param(request)
        _allow(scope, user)
        body = await read_body(request, limits.max_body_bytes)
        answers = schema.comparisons(body, limits)
        result = await service.add_comparisons(user, answers)
        metrics.comparisons.inc(len(answers))
        return result

    async def suggest(request: Request, scope: Scope) -> dict[str, Any]:
        user = user_param(request)
        _allow(scope, user)
        body = await read_body(request, limits.max_body_bytes)
        prompt = schema.prompt(schema.required(body, "prompt"), "prompt", limits)
        candidates = schema.text_list(body, "candidates", limits, min_items=2)
        n = schema.count(body, "n", 1, limits.max_suggestions, "max_suggestions")
        return {"user": user, "pairs": await service.suggest(user, prompt, candidates, n)}

    async def user_get(request: Request, scope: Scope) -> dict[str, Any]:
        user = user_param(request)
        _allow(scope, user)
        return await service.user(user)

    async def user_delete(request: Request, scope: Scope) -> dict[str, Any]:
        user = user_param(request)
        _allow(scope, user)
        return await service.delete(user)

    async def healthz(request: Request, scope: Scope) -> dict[str, Any]:
        return {"status": "ok", "K": int(reward.K), "users": service.n_users()}

    async def metrics_text(request: Request, scope: Scope) -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    async def index(request: Request, scope: Scope) -> Response:
        return HTMLResponse(page)

    users = "/v1/users/{user:path}"
    routes = [
        Route("/", _endpoint("/", index, public=True), methods=["GET"]),
        Route("/healthz", _endpoint("/healthz", healthz, public=True), methods=["GET"]),
        Route("/metrics", _endpoint("/metrics", metrics_text), methods=["GET"]),
        Route("/get_reward", _endpoint("/get_reward", get_reward), methods=["POST"]),
        Route("/v1/score", _endpoint("/v1/score", score), methods=["POST"]),
        Route(users + "/comparisons", _endpoint(users + "/comparisons", comparisons),
              methods=["POST"]),
        Route(users + "/suggest", _endpoint(users + "/suggest", suggest), methods=["POST"]),
        Route(users, _endpoint(users, user_get), methods=["GET"]),
        Route(users, _endpoint(users, user_delete), methods=["DELETE"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return JSONResponse({"error": f"{detail}: {request.method} {request.url.path}"},
                            status_code=status)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await service.stop()

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error, Exception: http_error})
    app.state.service = service
    app.state.metrics = metrics
    return app
