"""Secure by default: a server reachable beyond this machine must authenticate its clients.

The dashboard (the worker's web server) and the media bridge bind to 127.0.0.1 by default. Binding
either to another address without a way to authenticate (dashboard: a page token or a supervisors
tokens file; bridge: a token or Twilio signature validation) is refused at start with
:class:`InsecureBind`, unless the operator says ``--insecure`` (``STREAMPROC_INSECURE=true``); that
override is logged as a warning on every start so it cannot go unnoticed.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

log = logging.getLogger("streamproc.security")


class InsecureBind(RuntimeError):
    """Refused: a non-loopback bind address with no authentication configured."""


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback address ('' / 0.0.0.0 / :: are not)."""
    if host in ("", "*"):
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False  # cannot tell: assume exposed
        return bool(infos) and all(is_loopback(str(info[4][0])) for info in infos)
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def check_bind(service: str, host: str, *, authenticated: bool, insecure: bool, how: str) -> None:
    """Refuse ``service`` on a non-loopback ``host`` without authentication, unless ``insecure``.

    ``how`` tells the operator which settings provide authentication.
    """
    if authenticated or is_loopback(host):
        return
    if insecure:
        log.warning(
            "INSECURE: %s listens on %s WITHOUT authentication (--insecure): anyone who can reach this "
            "address can use it. Configure %s.", service, host, how,
        )
        return
    raise InsecureBind(
        f"refusing to start the {service} on {host}, which is reachable beyond this machine, without "
        f"authentication: configure {how}, bind to 127.0.0.1, or pass --insecure (STREAMPROC_INSECURE=true) "
        "to run open on purpose"
    )
