"""streamproc's Faust app and agents (``faust -A agents.app worker``); see docs/architecture.md."""

#: Marks this package as streamproc's: another distribution's top-level ``agents`` package (the
#: OpenAI Agents SDK ships one) must not be mistaken for it (streamproc.cli checks this).
STREAMPROC_AGENTS = True
