"""Counters in Redis, shared by every Guard process and replica that names the same server.

Each admission is one Lua script (one round trip, atomic on the server, timed by the server's clock so
replicas' clocks do not matter): every counter of the tier is checked, and only if all admit are they all
updated. Keys of one principal share a hash tag, so the script also runs on Redis Cluster. Every call has a
deadline (``quotas.timeout_ms``); after a failure the backend counts as down and is not asked again until a
backoff (0.1 s doubling to 5 s) has passed, so a dead server costs no request more than the deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

from guard.quota.memory import Admission, CounterState, Rate, Slot

log = logging.getLogger("guard.quota")


class BackendDown(Exception):
    """The quota backend did not answer (refused, timed out, or in backoff after a failure)."""


# KEYS: rate keys.., slot keys.., name key. ARGV: a space-separated list "nrates nslots lease_s" then
# "limit period cost" per rate and "limit" per slot; the ticket; the principal's label. Returns one string
# "ok refused retry_after remaining reset ..." (refused: 1-based counter index, 0 none; remaining and reset
# per counter: after charging, or as they stand when refused). One argument and one reply string keep the
# client's encoding and parsing to a minimum.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local a = {}
for v in string.gmatch(ARGV[1], '%S+') do a[#a + 1] = tonumber(v) end
local nr, ns, lease = a[1], a[2], a[3]
local ticket, label = ARGV[2], ARGV[3]
local ok, refused, retry = 1, 0, 0
local after, before, news = {}, {}, {}
for i = 1, nr do
  local limit, period, cost = a[3 + 3*i - 2], a[3 + 3*i - 1], a[3 + 3*i]
  local interval = period / limit
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new = tat + cost * interval
  if new - now > period + 1e-9 and ok == 1 then ok, refused, retry = 0, i, new - now - period end
  news[i] = new
  after[#after + 1] = math.max(0, math.floor((period - (new - now)) / interval + 1e-9))
  after[#after + 1] = new - now
  before[#before + 1] = math.max(0, math.floor((period - (tat - now)) / interval + 1e-9))
  before[#before + 1] = tat - now
end
for j = 1, ns do
  local key, limit = KEYS[nr + j], a[3 + 3*nr + j]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local held = redis.call('ZCARD', key)
  if held + 1 > limit and ok == 1 then ok, refused, retry = 0, nr + j, 1 end
  after[#after + 1] = math.max(0, limit - held - 1)
  after[#after + 1] = 0
  before[#before + 1] = math.max(0, limit - held)
  before[#before + 1] = 0
end
if ok == 1 then
  for i = 1, nr do
    local ms = math.ceil((news[i] - now) * 1000) + 1000
    redis.call('SET', KEYS[i], string.format('%.6f', news[i]), 'PX', ms)
  end
  for j = 1, ns do
    redis.call('ZADD', KEYS[nr + j], now + lease, ticket)
    redis.call('PEXPIRE', KEYS[nr + j], math.ceil(lease * 1000))
  end
  redis.call('SET', KEYS[nr + ns + 1], label, 'EX', 2678400)
end
local out = after
if ok == 0 then out = before end
local res = {ok, refused, string.format('%.6f', retry)}
for _, v in ipairs(out) do res[#res + 1] = string.format('%.6f', v) end
return table.concat(res, ' ')
"""

# KEYS: rate keys.., slot keys... ARGV: "nrates" then "limit period delta" per rate (space-separated); ticket.
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local a = {}
for v in string.gmatch(ARGV[1], '%S+') do a[#a + 1] = tonumber(v) end
local nr = a[1]
for i = 1, nr do
  local limit, period, delta = a[1 + 3*i - 2], a[1 + 3*i - 1], a[1 + 3*i]
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if delta > 0 and tat < now then tat = now end
  local new = tat + delta * period / limit
  if new <= now then redis.call('DEL', KEYS[i])
  else redis.call('SET', KEYS[i], string.format('%.6f', new), 'PX', math.ceil((new - now) * 1000) + 1000) end
end
for j = nr + 1, #KEYS do redis.call('ZREM', KEYS[j], ARGV[2]) end
return 1
"""

_NOW = "local t = redis.call('TIME') return tostring(tonumber(t[1]) + tonumber(t[2]) / 1e6)"


def principal_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class RedisBackend:
    name = "redis"

    def __init__(self, url: str, timeout_s: float, prefix: str) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.timeout = timeout_s
        self.prefix = prefix
        self.client: Any = aioredis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self._admit = self.client.register_script(_ADMIT)
        self._settle = self.client.register_script(_SETTLE)
        self._now = self.client.register_script(_NOW)
        self._fails = 0
        self._down_until = 0.0

    @property
    def healthy(self) -> bool:
        return self._fails == 0

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        now = time.monotonic()
        if now < self._down_until:
            raise BackendDown("quota backend down (retrying after backoff)")
        try:
            async with asyncio.timeout(self.timeout):
                res = await script(keys=keys, args=args)
        except Exception as e:
            self._fails += 1
            self._down_until = time.monotonic() + min(5.0, 0.1 * 2 ** (self._fails - 1))
            if self._fails == 1 or self._fails % 50 == 0:
                log.error(
                    "quota backend %s failed (%d in a row): %s",
                    self.name,
                    self._fails,
                    type(e).__name__ if not str(e) else e,
                )
            raise BackendDown(f"quota backend unavailable: {type(e).__name__}") from None
        if self._fails:
            log.warning("quota backend %s answers again after %d failures", self.name, self._fails)
        self._fails = 0
        return res

    async def admit(
        self, key: str, tier: str, rates: list[Rate], slots: list[Slot], ticket: str, lease_s: float, label: str
    ) -> Admission:
        h = principal_hash(key)
        keys = [f"{self.prefix}:{{{h}}}:{tier}:{r[0]}" for r in rates]
        keys += [f"{self.prefix}:{{{h}}}:{tier}:{s[0]}" for s in slots]
        keys.append(f"{self.prefix}:{{{h}}}:name")
        nums = [len(rates), len(slots), lease_s]
        for _, limit, period, cost in rates:
            nums += [limit, period, cost]
        nums += [limit for _, limit in slots]
        res = (await self._call(self._admit, keys, [" ".join(map(str, nums)), ticket, label])).split()
        adm = Admission(res[0] == b"1")
        refused = int(res[1])
        i = 3
        for name, limit, *_ in rates:
            adm.counters[name] = CounterState(limit, int(float(res[i])), float(res[i + 1]))
            i += 2
        for name, limit in slots:
            adm.counters[name] = CounterState(limit, int(float(res[i])), 0.0)
            i += 2
        if refused:
            adm.refused_by = rates[refused - 1][0] if refused <= len(rates) else slots[refused - 1 - len(rates)][0]
            adm.retry_after_s = float(res[2])
        return adm

    async def settle(self, key: str, tier: str, rates: list[Rate], slots: list[str], ticket: str) -> None:
        if not rates and not slots:
            return
        h = principal_hash(key)
        keys = [f"{self.prefix}:{{{h}}}:{tier}:{r[0]}" for r in rates] + [
            f"{self.prefix}:{{{h}}}:{tier}:{s}" for s in slots
        ]
        nums: list[Any] = [len(rates)]
        for _, limit, period, delta in rates:
            nums += [limit, period, delta]
        await self._call(self._settle, keys, [" ".join(map(str, nums)), ticket])

    async def usage(self, key: str | None) -> list[tuple[str, str, str, float]]:
        """(principal, tier, counter, value) as MemoryBackend.usage, read with SCAN (at most 10,000 keys)."""

        async def read() -> list[tuple[str, str, str, float]]:
            now = float((await self._now(keys=[], args=[])).decode())
            pattern = f"{self.prefix}:{{{principal_hash(key)}}}:*" if key is not None else f"{self.prefix}:*"
            out, names, n = [], {}, 0
            async for raw in self.client.scan_iter(match=pattern, count=500):
                n += 1
                if n > 10_000:
                    break
                k = raw.decode()
                rest = k[len(self.prefix) + 1 :]
                h, _, tail = rest.partition("}:")
                h = h.lstrip("{")
                if tail == "name":
                    continue
                tier, _, counter = tail.rpartition(":")
                if h not in names:
                    label = await self.client.get(f"{self.prefix}:{{{h}}}:name")
                    names[h] = label.decode() if label else h
                if counter.startswith("concurrent"):
                    out.append((names[h], tier, counter, float(await self.client.zcount(k, now, "+inf"))))
                else:
                    tat = await self.client.get(k)
                    if tat is not None and float(tat) > now:
                        out.append((names[h], tier, counter, float(tat) - now))
            return out

        try:
            return await asyncio.wait_for(read(), max(self.timeout, 5.0))
        except Exception as e:
            raise BackendDown(f"quota backend unavailable: {type(e).__name__}") from None

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except Exception as e:
            log.debug("closing the quota backend: %s", e)
