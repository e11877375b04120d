"""The answer: a whole answer read, screened (screens_response) and sent, or a stream relayed
(guard.stages.stream) (answer); then ``exchange.completed`` handed to the journal (completed)."""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

from guard import telemetry
from guard.apis import translate
from guard.apis.wire import WIRE
from guard.errors import GuardError
from guard.exchange import Exchange
from guard.quota import hook as quota
from guard.screens import budget
from guard.screens.base import ScreenSet, Segment, Verdict
from guard.screens.edits import screen_answer
from guard.stages.base import Flow, Services, decision, log, model_label, record, send_raw, throttled
from guard.stages.decide import write_back
from guard.stages.forward import since_forward
from guard.stages.stream import relay_stream
from guard.upstream import drop_response_headers, max_response_bytes, read_error
from guard.upstream_errors import screen_error_body


class Answer:
    """The upstream's answer to the client: whole answers through the response screens (pii restores
    pseudonyms, safety, denylist), streams through the stream screens. Leaves ``Exchange.outcome``."""

    name: ClassVar[str] = "answer"
    timed: ClassVar[bool] = False  # its parts are: screens_response, and upstream_total (completed)

    def __init__(self, svc: Services) -> None:
        self._config, self._quotas, self._recorder = svc.config, svc.quotas, svc.recorder

    async def run(self, flow: Flow) -> None:
        ex, resp, screens, prompt = flow.ex, flow.response, flow.screens, flow.prompt
        assert resp is not None and screens is not None and prompt is not None
        try:
            ctype = resp.headers.get("content-type", "")
            is_stream = ex.stream and resp.status == 200 and ("event-stream" in ctype or "ndjson" in ctype)
            if is_stream:
                kind = ex.translated
                ex.outcome = await relay_stream(
                    self._config,
                    self._quotas,
                    ex,
                    translate.Stream(kind, resp, ex.model, ex.body) if kind else resp,
                    prompt,
                    screens,
                    flow.receive,
                    flow.send,
                )
                status = ex.outcome["status"]
            else:
                ex.outcome = await self._whole(ex, resp, prompt, screens, flow)
                status = resp.status
        finally:
            resp.release()
        telemetry.child(telemetry.REQUESTS, ex.api, ex.operation, model_label(ex), decision(ex), str(status)).inc()

    async def _whole(
        self, ex: Exchange, resp: Any, prompt: list[Segment], screens: ScreenSet, flow: Flow
    ) -> dict[str, Any]:
        try:
            data = await resp.read(max_response_bytes(self._config, ex.upstream))
        except Exception as e:
            raise read_error(e, ex.upstream, ex.request_id) from None
        outcome: dict[str, Any] = {"status": resp.status, "bytes": len(data)}
        if ex.translated:
            data = translate.whole(ex.translated, resp.status, data, ex.model)
        if resp.status != 200:  # the upstream's error answer: capped and screened like an answer
            data, verdicts, done = await screen_error_body(ex.api, data, screens.response, prompt, ex.context)
            ex.verdicts.extend(verdicts)
            if done:
                outcome["reason"] = f"upstream_error_{done}"
            outcome["bytes"] = len(data)
        else:
            try:
                body = json.loads(data)
                if not isinstance(body, dict):
                    raise ValueError
            except (ValueError, RecursionError):
                telemetry.UPSTREAM_ERRORS.labels(ex.upstream, "bad_body").inc()
                log.warning(
                    "request %s: upstream %r returned a body that is not a JSON object", ex.request_id, ex.upstream
                )
                raise GuardError(
                    502,
                    "the model server returned a body that is not a JSON object",
                    "upstream_error",
                    "upstream_bad_response",
                ) from None
            api = WIRE[ex.api]
            outcome["usage"] = api.usage(body)
            if screens.response and ex.operation != "embeddings":
                data = await self._screen_whole(ex, body, prompt, screens, api)
            outcome["finish_reasons"] = api.finish_reasons(body)
            outcome["bytes"] = len(data)
            capture = getattr(getattr(self._recorder, "capture", None), "level", "none")
            if capture != "none":  # the recorder hashes, redacts or keeps it per audit.capture
                outcome["answer_text"] = "\n".join(s.text for s in api.response_segments(ex.operation, body))
        # exchange.started is already durable; the completion record need not delay the answer.
        headers = drop_response_headers(resp.headers)
        if quota.TICKET in ex.context:
            headers = quota.merge_headers(ex, headers)
        await send_raw(flow.send, resp.status, headers, data, ex)
        return outcome

    async def _screen_whole(
        self, ex: Exchange, body: dict[str, Any], prompt: list[Segment], screens: ScreenSet, api: Any
    ) -> bytes:
        api.drop_unscreenable(body)  # logprobs, token ids: cannot be judged
        segs = api.response_segments(ex.operation, body)
        before = [s.text for s in segs]
        t = time.perf_counter()
        verdicts: list[Verdict] = []

        async def run_screens() -> None:
            verdicts.extend(await screen_answer(screens.response, segs, prompt, ex.context))

        await budget.run(run_screens, self._config.limits.screen_budget_ms)
        record(ex, "screens_response", t)
        ex.verdicts.extend(verdicts)
        if any(v.blocked for v in verdicts):
            api.filter_whole(ex.operation, body)
        else:
            write_back(body, segs, before)
        # the judged object, never the upstream's bytes: a key given twice is read as its last value here, as
        # its first by some clients (docs/threat-model.md)
        return json.dumps(body).encode()


class Completed:
    """``exchange.completed`` handed to the journal without waiting (``exchange.started`` is durable and the
    answer is out: the journal writes it with its next group commit); quota tokens and token counts settled;
    ``upstream_total`` (from sending upstream until now) recorded."""

    name: ClassVar[str] = "completed"
    timed: ClassVar[bool] = False

    def __init__(self, svc: Services) -> None:
        self._recorder = svc.recorder

    async def run(self, flow: Flow) -> None:
        ex = flow.ex
        outcome = ex.outcome or {}
        if quota.TICKET in ex.context:
            quota.account(ex, outcome)
        u = outcome.get("usage")
        if u:
            telemetry.child(telemetry.TOKENS, model_label(ex), "input").inc(u.get("input_tokens", 0))
            telemetry.child(telemetry.TOKENS, model_label(ex), "output").inc(u.get("output_tokens", 0))
        try:
            await self._recorder.finished(ex, "exchange.completed", outcome, wait=False)
        except Exception as err:
            telemetry.FAIL_CLOSED.labels("audit").inc()
            throttled.error("completion", "audit completion record for %s failed: %s", ex.request_id, err)
        record(ex, "upstream_total", since_forward(flow))
