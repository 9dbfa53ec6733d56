"""Integrations of rlx with other frameworks. Each submodule imports its framework lazily, so
``import rlx`` (and ``import rlx.integrations``) works without any of them installed."""
