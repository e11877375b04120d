"""Streamed answers: the upstream's events relayed to the client as they come, through per-channel stream
screens (guard.relay), metered by the quota, ended with the API's own error event when they must stop."""

from __future__ import annotations

from typing import Any

from guard import telemetry
from guard.apis.wire import WIRE, module
from guard.client_watch import ClientGone, ClientWatch
from guard.config import Config
from guard.errors import GuardError
from guard.exchange import Exchange
from guard.quota import hook as quota
from guard.quota import stream as quota_stream
from guard.relay import Relay, StreamEventTooLarge, UpstreamReportedError, UpstreamStreamError, scan_tail
from guard.screens.base import ScreenSet, Segment
from guard.stages.base import Receive, Send, log, send_head
from guard.upstream import max_response_bytes, rate_limit_headers, read_error, too_large


async def relay_stream(
    cfg: Config,
    quotas: Any,
    ex: Exchange,
    resp: Any,
    prompt: list[Segment],
    screens: ScreenSet,
    receive: Receive,
    send: Send,
) -> dict[str, Any]:
    """A streamed answer relayed as it comes, through the stream screens (guard.relay) when the profile has
    response screens; quota metering; the API's own error event when it must end early. The outcome."""
    api = WIRE[ex.api]
    headers = [
        (b"content-type", api.STREAM_MEDIA_TYPE),
        (b"cache-control", b"no-cache"),
        *rate_limit_headers(resp.headers),
    ]
    strip = None
    if quota.TICKET in ex.context:
        headers = quota.merge_headers(ex, headers)
        strip = quota.UsageStripper(ex.api) if ex.context.get(quota.STRIP_USAGE) else None
    meter = quota_stream.meter(quotas, ex)  # None unless the tier counts tokens
    await send_head(send, ex, 200, headers)
    telemetry.ACTIVE_STREAMS.inc()
    watch = ClientWatch(receive)  # a client that leaves stops the upstream, even while text is held
    outcome: dict[str, Any] = {"status": 200}
    screened = bool(screens.response) and screens.stream_screens
    relay = (
        Relay(
            ex.api,
            ex.operation,
            ex.model,
            lambda kind: [s.open_stream(prompt, ex.context, kind) for s in screens.response],
            max_event_bytes=max_response_bytes(cfg, ex.upstream),
        )
        if screened
        else None
    )
    if relay is not None and strip is not None:
        relay.strip_usage, strip = True, None
    sent, tail = 0, b""
    try:
        stop = None
        while True:
            data = await watch.until_gone(resp.next_chunk())
            if data is None:
                break
            if relay is None:
                if strip is not None and not (data := strip.feed(data)):
                    continue
                if meter is not None and meter.feed(data):
                    await meter.check()  # raises StreamExhausted when the budget cannot cover it
                tail = (tail + data)[-4096:]
                sent += len(data)
                await send({"type": "http.response.body", "body": data, "more_body": True})
                continue
            out, stop = await watch.until_gone(relay.feed(data))
            if out and meter is not None and meter.feed(out):
                await meter.check()
            if out:
                sent += len(out)
                await send({"type": "http.response.body", "body": out, "more_body": True})
            if stop:
                break
        if strip is not None and (rest := strip.finish()):
            sent += len(rest)
            await send({"type": "http.response.body", "body": rest, "more_body": True})
        if relay is not None and stop is None:
            out, stop = await watch.until_gone(relay.finish())
            if out:
                sent += len(out)
                await send({"type": "http.response.body", "body": out, "more_body": True})
        if stop is not None:
            ex.verdicts.append(stop)
            end = relay.stop_bytes() if relay else b""
            sent += len(end)
            outcome["finish_reasons"] = ["content_filter"]
            await send({"type": "http.response.body", "body": end, "more_body": False})
        else:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            if relay is None:
                outcome["usage"], outcome["finish_reasons"] = scan_tail(ex.api, tail)
                if strip is not None and strip.usage:
                    outcome["usage"] = strip.usage
            else:
                outcome["usage"], outcome["finish_reasons"] = relay.usage, relay.finish_reasons
    except ClientGone:
        outcome.update(status=499, reason="client_disconnected")
    except quota_stream.StreamExhausted as e:  # the budget ran out mid-answer: the API's error event
        outcome.update(quota_stream.record(ex, e))
        await send({"type": "http.response.body", "body": module(ex.api).stream_error(e.error), "more_body": False})
    except StreamEventTooLarge as e:
        telemetry.UPSTREAM_ERRORS.labels(ex.upstream, "too_large").inc()
        log.warning("request %s: upstream %r: %s", ex.request_id, ex.upstream, e)
        err = too_large()
        outcome.update(status=502, reason=err.code)
        await send({"type": "http.response.body", "body": module(ex.api).stream_error(err), "more_body": False})
    except UpstreamReportedError:
        telemetry.UPSTREAM_ERRORS.labels(ex.upstream, "stream_error").inc()
        log.warning("request %s: upstream %r reported an error mid-stream (text withheld)", ex.request_id, ex.upstream)
        err = GuardError(
            502, "the model server reported an error during the stream", "upstream_error", "upstream_error"
        )
        outcome.update(status=502, reason="upstream_stream_error")
        await send({"type": "http.response.body", "body": module(ex.api).stream_error(err), "more_body": False})
    except UpstreamStreamError as e:
        telemetry.UPSTREAM_ERRORS.labels(ex.upstream, "bad_body").inc()
        log.warning("request %s: upstream %r sent an invalid stream: %s", ex.request_id, ex.upstream, e)
        outcome.update(status=502, reason="upstream_bad_stream")
        err = GuardError(502, "the model server sent an invalid stream", "upstream_error", "upstream_bad_stream")
        await send({"type": "http.response.body", "body": module(ex.api).stream_error(err), "more_body": False})
    except Exception as e:
        err = read_error(e, ex.upstream, ex.request_id)
        outcome.update(status=err.status, reason=err.code)
        await send({"type": "http.response.body", "body": module(ex.api).stream_error(err), "more_body": False})
    finally:
        watch.close()
        telemetry.ACTIVE_STREAMS.dec()
        if relay is not None:
            ex.verdicts.extend(v for v in relay.verdicts() if all(v is not w for w in ex.verdicts))
    outcome["bytes"] = sent
    return outcome
