"""Where the audit tools find the journal's keys: the signing key and the content keys, as guard.yaml says.

The docs advise keeping ``audit.signing_key`` outside ``audit.dir``; the tools therefore read it (and
``audit.retention``) from the configuration: ``--config FILE``, else ``./guard.yaml`` or
``/etc/guard/guard.yaml`` when its ``audit.dir`` is the journal being worked on. Without a configuration,
or when it leaves them unset, the defaults beside the journal apply (``DIR/keys/signing-key.pem``,
``DIR/keys/content``), which is where Guard creates them when the configuration names none.
"""

from __future__ import annotations

from pathlib import Path

from guard.audit.settings import AuditSettings

CANDIDATES = (Path("guard.yaml"), Path("/etc/guard/guard.yaml"))


class LocateError(Exception):
    pass


def audit_settings(journal: Path, config: Path | None) -> tuple[AuditSettings | None, str]:
    """The audit section that governs ``journal`` and where it came from ("" when none applies).
    LocateError when ``config`` is given and cannot be loaded or is about another journal."""
    from guard.config import ConfigError, load_config

    if config is not None:
        try:
            a = load_config(config).audit
        except ConfigError as e:
            raise LocateError(str(e)) from None
        if _same(a.dir, journal):
            return a, str(config)
        raise LocateError(f"{config}: its audit.dir is {a.dir}, not {journal}")
    for cand in CANDIDATES:
        if not cand.is_file():
            continue
        try:
            a = load_config(cand).audit
        except (ConfigError, OSError):
            continue  # a file we were not asked to read: ignore it rather than fail
        if _same(a.dir, journal):
            return a, str(cand)
    return None, ""


def _same(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def signing_key(journal: Path, given: Path | None, settings: AuditSettings | None, source: str, what: str) -> Path:
    """The signing key to use for ``what`` (a manifest, a prune record), or LocateError saying where it looked."""
    if given is not None:
        if not given.exists():
            raise LocateError(f"{what}: {given} not found")
        return given
    looked = []
    if settings is not None and settings.signing_key is not None:
        if settings.signing_key.exists():
            return settings.signing_key
        looked.append(f"{settings.signing_key} (audit.signing_key in {source})")
    own = journal / "keys" / "signing-key.pem"
    if own.exists():
        return own
    looked.append(str(own))
    hint = "" if settings is not None else "; pass --config guard.yaml (its audit.signing_key) or --signing-key"
    raise LocateError(f"{what}: no signing key found (looked at {', '.join(looked)}){hint}")


def content_key_dir(journal: Path, given: Path | None, settings: AuditSettings | None) -> Path:
    if given is not None:
        return given
    if settings is not None:
        return settings.content_key_dir()
    return journal / "keys" / "content"
