"""Who is calling: the one place that maps a request to the account it acts for."""

from __future__ import annotations

from collections.abc import Mapping

# Until accounts and API keys land, every caller is the studio's one local owner. Swap
# `account_for` and every door (REST, Gradio events, file URLs) follows.
LOCAL_ACCOUNT = "local"


def account_for(headers: Mapping[str, str]) -> str:
    """The account a request acts for, from its HTTP headers."""
    return LOCAL_ACCOUNT
