"""Section 15 (and 18.5): tokens, identities, and what an authentication failure may reveal."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from fedproto_pb.v1.errors_pb2 import ErrorCode

from ..checks import check, fail
from ..context import Context
from ..registry import case
from ._common import expect_call

#: Nothing to import: the cases register themselves with the registry.
__all__: list[str] = []


def _wrong_tokens(good: tuple[str, ...]) -> st.SearchStrategy[str]:
    """Tokens that are not configured: random ones and near misses of the real ones."""
    near = st.sampled_from(good).flatmap(
        lambda t: st.sampled_from(
            [
                t[:-1],
                t + "x",
                t.upper() if t.upper() != t else t + "A",
                " " + t,
                t + "\n",
                t[1:] or "x",
                t * 2,
            ]
        )
    )
    return st.one_of(near, st.text(min_size=1, max_size=40)).filter(lambda t: t not in good)


@case(
    "auth/15.1.3/unknown-token",
    rule="When a server configured with tokens receives a Hello with a missing or unknown token, it MUST "
    "answer with an Error with code UNAUTHENTICATED and the Hello's request_id.",
    tokens=1,
)
def _case_unknown_token(ctx: Context) -> None:
    good = tuple(t for t in (ctx.settings.token, ctx.settings.token2) if t)

    @given(token=_wrong_tokens(good))
    @example(token=good[0] + "x")
    def check_token(token: str) -> None:
        ctx.run(_refused(ctx, token))

    ctx.hypothesis(check_token)


async def _refused(ctx: Context, token: str) -> None:
    async with await ctx.open() as conn:
        reply = await conn.hello(token=token, request_id=17)
        reply.expect_error(ErrorCode.ERROR_CODE_UNAUTHENTICATED)


@case(
    "auth/15.1.3/missing-token",
    rule="When a server configured with tokens receives a Hello with a missing or unknown token, it MUST "
    "answer with an Error with code UNAUTHENTICATED and the Hello's request_id.",
    tokens=1,
)
async def _case_missing_token(ctx: Context) -> None:
    conn = await ctx.open()
    (await conn.hello(token="")).expect_error(ErrorCode.ERROR_CODE_UNAUTHENTICATED)


@case(
    "auth/15.1.4/unauthenticated-closes-1008",
    rule="After an UNAUTHENTICATED error the server MUST close the connection with code 1008.",
    tokens=1,
)
async def _case_closes_1008(ctx: Context) -> None:
    conn = await ctx.open()
    (await conn.hello(token=ctx.settings.token + "-wrong")).expect_error(ErrorCode.ERROR_CODE_UNAUTHENTICATED)
    await conn.expect_close({1008})


@case(
    "auth/15.1.5/error-reveals-no-token",
    rule="The UNAUTHENTICATED error MUST NOT reveal the configured tokens or whether a similar token exists.",
    tokens=1,
)
async def _case_reveals_nothing(ctx: Context) -> None:
    good = [t for t in (ctx.settings.token, ctx.settings.token2) if t]
    texts = []
    for attempt in (good[0][:-1], good[0] + "x", "completely-different-token"):
        conn = await ctx.open()
        error = (await conn.hello(token=attempt)).expect_error(ErrorCode.ERROR_CODE_UNAUTHENTICATED)
        text = error.message + " " + " ".join(f"{k}={v}" for k, v in error.details.items())
        for token in good:
            if token in text:
                fail(f"the UNAUTHENTICATED error for token {attempt!r} contains a configured token: {text!r}")
        texts.append(re.sub(r"\d+", "N", text.replace(attempt, "<given>")))
    check(
        len(set(texts)) == 1,
        "the UNAUTHENTICATED errors differ between a near miss and an unrelated token, which reveals "
        f"whether a similar token exists: {texts}",
    )


@case(
    "auth/15.2.1/identity-per-token",
    rule="Each configured token maps to exactly one identity; Welcome.identity is that identity (§18.5.2: "
    "the second token is of a different identity).",
    tokens=2,
)
async def _case_identity_per_token(ctx: Context) -> None:
    first = await ctx.connect()
    second = await ctx.connect_second()
    assert first.welcome is not None and second.welcome is not None
    check(first.welcome.identity, "the Welcome's identity is empty")
    check(
        first.welcome.identity != second.welcome.identity,
        f"both tokens got identity {first.welcome.identity!r}; --token2 must be of another identity",
    )
    again = await ctx.connect()
    assert again.welcome is not None
    check(
        again.welcome.identity == first.welcome.identity,
        f"the same token got identities {first.welcome.identity!r} and {again.welcome.identity!r}",
    )
    if ctx.has("calls"):
        who = await expect_call(second, "whoami")
        check(
            who.string_value == second.welcome.identity,
            f"whoami() says {who.string_value!r}, the Welcome said {second.welcome.identity!r} (§18.2.10)",
        )


@case(
    "auth/4.1.5/version-checked-before-token",
    rule="A server SHOULD check a Hello in this order: request_id (§4.1.4), versions (§4.2), token (§15).",
    level="SHOULD",
    tokens=1,
)
async def _case_version_before_token(ctx: Context) -> None:
    conn = await ctx.open()
    reply = await conn.hello(token="not-a-token", versions=[9999])
    reply.expect_error(ErrorCode.ERROR_CODE_UNSUPPORTED_VERSION)


@case(
    "auth/18.5.3/anonymous-identity",
    rule="Without tokens, Welcome.identity and whoami() MUST both be anonymous.",
    anonymous=True,
)
async def _case_anonymous_identity(ctx: Context) -> None:
    conn = await ctx.connect(token="")
    assert conn.welcome is not None
    check(conn.welcome.identity == "anonymous", f"Welcome.identity is {conn.welcome.identity!r}")
    if ctx.has("calls"):
        who = await expect_call(conn, "whoami")
        check(who.string_value == "anonymous", f"whoami() returned {who}")


@case(
    "auth/15.2.2/tokens-ignored-without-tokens",
    rule="A server configured without tokens MUST treat every client as the identity anonymous, ignoring "
    "any token the client sends.",
    anonymous=True,
)
def _case_tokens_ignored(ctx: Context) -> None:
    @given(token=st.text(max_size=30))
    @example(token="some-token")
    def check_token(token: str) -> None:
        ctx.run(_anonymous(ctx, token))

    ctx.hypothesis(check_token, max_examples=max(3, ctx.settings.max_examples // 3))


async def _anonymous(ctx: Context, token: str) -> None:
    async with await ctx.open() as conn:
        welcome = (await conn.hello(token=token)).expect("welcome")
        check(welcome.identity == "anonymous", f"with token {token!r} the identity is {welcome.identity!r}")
