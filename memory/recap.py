""" "Previously on…": what happened in a campaign since a member last left its room
(CONTRACTS §7 "Recap and journal"), in a few short paragraphs, with no model call.

Where the recap starts: after `since_seq` when the client gives one, else after the seq
the campaign was at when the member's last socket to it closed
(`realtime.services.presence_leave` keeps it), else from the beginning.

How it is made, for the range since_seq < seq <= to_seq (to_seq: the campaign's latest
seq as the recap is read):
1. the stored summaries that lie wholly inside the range and end where summarizing has
   reached, widest first (a summary that starts before since_seq would retell what
   the member saw: its span is told from the events instead);
2. the events of the range that no such summary covers, told in plain words as
   memory.story tells them to this member (memory.story says what a member may be told
   and why summaries hold nothing a member may not see); a long stretch is read only
   from its latest RECAP_STRETCH_SEQS seqs;
3. kept short: the summaries and the events are each cut down by the same extractive
   summarizer the `fake` provider uses (deterministic; no model call), the latest
   narration closes the recap, and the whole text is at most RECAP_MAX_CHARS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from campaigns.selectors import Viewer, snapshot_get
from llm.tokens import count_tokens
from realtime.services import member_last_seen_get

from .selectors import story_events, story_events_count
from .story import (
    COUNTED_TYPES,
    STORY_TYPES,
    ReaderSummary,
    Told,
    clip_words,
    summaries_for_reader,
    teller_for,
)
from .summaries import extractive_summary

if TYPE_CHECKING:
    from campaigns.models import Membership

RECAP_MAX_CHARS = 2400
RECAP_SUMMARY_TOKENS = 200  # the summaries' paragraph
RECAP_EVENTS_TOKENS = 220  # the paragraph of what happened since the summaries
RECAP_LAST_NARRATION_CHARS = 700
RECAP_STRETCH_SEQS = 600  # the most of one unsummarized stretch that is read
# The room shows the card to a member away this long (settings.RECAP_CARD_AWAY_SECONDS).
RECAP_CARD_AWAY_SECONDS = 3600


@dataclass(frozen=True)
class Recap:
    text: str  # "" when nothing the member may see happened since
    since_seq: int
    from_seq: int
    to_seq: int
    events: int  # story events the member may see in from_seq..to_seq
    summaries: int  # stored summaries the text draws on
    last_seen_at: datetime | None
    away_seconds: int | None
    card: bool


def card_away_seconds() -> int:
    """RECAP_CARD_AWAY_SECONDS: a Django setting of that name, else the environment
    variable, else an hour."""
    if hasattr(settings, "RECAP_CARD_AWAY_SECONDS"):
        return int(settings.RECAP_CARD_AWAY_SECONDS)
    raw = os.environ.get("RECAP_CARD_AWAY_SECONDS", "").strip()
    if not raw:
        return RECAP_CARD_AWAY_SECONDS
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(
            f"RECAP_CARD_AWAY_SECONDS must be an integer, not {raw!r}"
        ) from None


def recap_get(*, membership: Membership, since_seq: int | None = None) -> Recap:
    """The recap of `membership`'s campaign for that member, since `since_seq` (None:
    since they last left the room)."""
    campaign_id = membership.campaign_id
    viewer = Viewer.of(membership)
    snapshot = snapshot_get(campaign_id=campaign_id, viewer=viewer)
    state = snapshot.state if snapshot else {}
    to_seq = snapshot.version if snapshot else 0
    last_seen = member_last_seen_get(campaign_id=campaign_id, user_id=membership.user_id)
    if since_seq is None:
        since_seq = last_seen.seq if last_seen is not None else 0
    since = max(0, min(since_seq, to_seq))
    now = timezone.now()
    away = int((now - last_seen.at).total_seconds()) if last_seen is not None else None
    events = (
        story_events_count(
            campaign_id=campaign_id,
            viewer=viewer,
            types=COUNTED_TYPES,
            after_seq=since,
            through_seq=to_seq,
        )
        if since < to_seq
        else 0
    )
    text, used = ("", 0)
    if events:
        text, used = _recap_text(
            campaign_id=campaign_id,
            viewer=viewer,
            state=state,
            name=membership.campaign.name,
            since=since,
            to_seq=to_seq,
        )
    return Recap(
        text=text,
        since_seq=since,
        from_seq=since + 1,
        to_seq=to_seq,
        events=events,
        summaries=used,
        last_seen_at=last_seen.at if last_seen is not None else None,
        away_seconds=away,
        card=bool(text) and away is not None and away >= card_away_seconds(),
    )


def summaries_chain(summaries: list[ReaderSummary], *, since: int) -> list[ReaderSummary]:
    """The fewest summaries, oldest first, that tile the summarized log back from where
    summarizing has reached, none starting at or before `since`."""
    reached = max((s.to_seq for s in summaries if s.layer == 0), default=0)
    widest: dict[int, ReaderSummary] = {}
    for s in summaries:
        if s.from_seq <= since:
            continue
        known = widest.get(s.to_seq)
        if known is None or (s.from_seq, -s.layer, -s.seq) < (
            known.from_seq,
            -known.layer,
            -known.seq,
        ):
            widest[s.to_seq] = s
    chain: list[ReaderSummary] = []
    cursor = reached
    while cursor > since and cursor in widest:
        chain.append(widest[cursor])
        cursor = widest[cursor].from_seq - 1
    chain.reverse()
    return chain


def _recap_text(
    *,
    campaign_id: Any,
    viewer: Viewer,
    state: dict[str, Any],
    name: str,
    since: int,
    to_seq: int,
) -> tuple[str, int]:
    usable = [s for s in summaries_for_reader(campaign_id=campaign_id, viewer=viewer) if s.usable]
    chain = summaries_chain(usable, since=since)
    # The stretches no chosen summary tells: before the chain (when since_seq fell inside
    # a summary's span) and after it (not summarized yet).
    stretches = (
        [(since, chain[0].from_seq - 1), (chain[-1].to_seq, to_seq)] if chain else [(since, to_seq)]
    )
    teller = teller_for(campaign_id=campaign_id, viewer=viewer, state=state)
    before: list[Told] = []
    after: list[Told] = []
    for n, (start, end) in enumerate(stretches):
        if end <= start:
            continue
        told = before if chain and n == 0 else after
        for page in story_events(
            campaign_id=campaign_id,
            viewer=viewer,
            types=STORY_TYPES,
            after_seq=max(start, end - RECAP_STRETCH_SEQS),
            through_seq=end,
        ):
            told += teller.tell_all(page)

    paragraphs = [f"Previously on {name}\u2026"]
    if chain:
        texts = [s.text for s in chain]
        joined = " ".join(texts)
        if count_tokens(joined) > RECAP_SUMMARY_TOKENS:
            joined = extractive_summary(
                [("summary", t) for t in texts], max_tokens=RECAP_SUMMARY_TOKENS
            )
        if before:
            paragraphs.append(_events_paragraph(before, budget=RECAP_EVENTS_TOKENS // 2))
        paragraphs.append(joined)
    last = next((t for t in reversed(after) if t.kind == "narration" and not t.aside), None)
    rest = [t for t in after if t is not last]
    if rest:
        lead = "Since then: " if chain or before else ""
        paragraphs.append(lead + _events_paragraph(rest, budget=RECAP_EVENTS_TOKENS))
    if last is not None:
        paragraphs.append(clip_words(last.text, RECAP_LAST_NARRATION_CHARS))
    paragraphs = [p for p in paragraphs if p.strip()]
    if len(paragraphs) == 1:
        return "", len(chain)
    text = "\n\n".join(paragraphs)
    return clip_words(text, RECAP_MAX_CHARS), len(chain)


def _events_paragraph(told: list[Told], *, budget: int) -> str:
    lines = [(t.kind if t.kind != "whisper" else "action", t.plain()) for t in told]
    joined = " ".join(text for _, text in lines)
    if count_tokens(joined) <= budget:
        return joined
    return extractive_summary(lines, max_tokens=budget)
