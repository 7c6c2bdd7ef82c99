"""`journal.md`: the story so far as one member may read it, in Markdown (CONTRACTS §7
"Recap and journal").

What goes in is what memory.story tells that member: narrations (and the DM's private
narrations to them), player actions, rolls with their result (formula, total, the
detail of the dice, DC and success when there is one; private rolls to their roller and
the GMs only, marked so), whispers to their sender, recipient and the GMs, public GM
directions, entities made, players and characters arriving. Retracted narrations are
left out. Chapters fall where the layer-0 summaries do: a heading per summary span,
with that summary under it, and a last chapter for what is not summarized yet.

Written a page of events at a time (memory.selectors.story_events, STORY_PAGE_SIZE
events a query, keyset on seq), so a campaign of any length streams in constant memory;
the journal ends at the seq the campaign was at when the download started.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.utils import timezone
from django.utils.text import slugify

from campaigns.selectors import Viewer, snapshot_get

from .selectors import story_events
from .story import (
    STORY_TYPES,
    ReaderSummary,
    Told,
    character_kind,
    summaries_for_reader,
    teller_for,
)

if TYPE_CHECKING:
    from campaigns.models import Membership

FILENAME_MAX = 80


def journal_filename(campaign_name: str) -> str:
    """`the-sunken-crown-journal.md` (non-Latin names keep their letters: slugify with
    unicode; the Content-Disposition header encodes them)."""
    slug = slugify(campaign_name, allow_unicode=True)[:FILENAME_MAX].strip("-_") or "campaign"
    return f"{slug}-journal.md"


# --- Markdown ------------------------------------------------------------------------------

_INLINE = re.compile(r"([\\`*_\[\]<>|])")
_LINE_START = re.compile(r"^(\s*)([#>+\-=]|\d+[.)])")


def md_escape(text: str) -> str:
    """Text that reads as itself in Markdown: no emphasis, link, HTML or heading that a
    player (or the model) typed takes effect; one paragraph, one line."""
    text = _INLINE.sub(r"\\\1", " ".join(str(text).split()))
    return _LINE_START.sub(r"\1\\\2", text)


def md_paragraphs(text: str) -> list[str]:
    return [md_escape(p) for p in re.split(r"\n\s*\n", str(text)) if p.strip()]


def _day(at: datetime) -> str:
    at = at.astimezone(UTC) if timezone.is_aware(at) else at
    return f"{at.day} {at:%B %Y}"


def told_markdown(told: Told) -> str:
    """One thing that happened as a Markdown block."""
    if told.kind == "narration":
        paragraphs = md_paragraphs(told.text)
        if told.aside and paragraphs:
            paragraphs[0] = (
                f"*({md_escape(told.aside[:1].upper() + told.aside[1:])})* " + paragraphs[0]
            )
        return "\n\n".join(paragraphs)
    if told.kind == "action":
        return f"**{md_escape(told.who)}:** {md_escape(told.text)}"
    if told.kind == "whisper":
        return f"*{md_escape(told.who)} whispers to {md_escape(told.to)}:* {md_escape(told.text)}"
    if told.kind == "direction":
        return f"*The GM:* {md_escape(told.text)}"
    if told.kind == "roll" and told.roll is not None:
        roll = told.roll
        reason = f" for {md_escape(roll['reason'])}" if roll.get("reason") else ""
        line = f"\U0001f3b2 *{md_escape(told.who)} rolls{reason}:* "
        line += f"`{roll['formula']}` \u2192 **{roll['total']}**"
        if roll.get("detail"):
            line += f" ({md_escape(roll['detail'])})"
        if roll.get("dc") is not None:
            line += f", DC {roll['dc']}: " + ("success" if roll.get("success") else "failure")
        return line + (f" *({md_escape(told.aside)})*" if told.aside else "")
    aside = f" ({told.aside})" if told.aside else ""
    return f"*{md_escape(told.text + aside)}*"


# --- The journal ---------------------------------------------------------------------------


class Journal:
    """One member's journal of their campaign, written as chunks of Markdown."""

    def __init__(self, *, membership: Membership) -> None:
        self.membership = membership
        self.campaign_id = membership.campaign_id
        self.viewer = Viewer.of(membership)
        snapshot = snapshot_get(campaign_id=self.campaign_id, viewer=self.viewer)
        self.state: dict[str, Any] = snapshot.state if snapshot else {}
        self.through_seq = snapshot.version if snapshot else 0
        # Chapters: the layer-0 summaries (their spans tile the summarized log), in order.
        self.chapters: list[ReaderSummary] = sorted(
            (
                s
                for s in summaries_for_reader(campaign_id=self.campaign_id, viewer=self.viewer)
                if s.layer == 0 and s.to_seq <= self.through_seq
            ),
            key=lambda s: s.from_seq,
        )
        self.teller = teller_for(campaign_id=self.campaign_id, viewer=self.viewer, state=self.state)
        self.chapter_shown = -1  # index of the last chapter whose heading is written
        self.last_at: datetime | None = None
        self.told = 0

    @property
    def filename(self) -> str:
        return journal_filename(self.membership.campaign.name)

    def chunks(self) -> Iterator[str]:
        yield self._head()
        for page in story_events(
            campaign_id=self.campaign_id,
            viewer=self.viewer,
            types=STORY_TYPES,
            through_seq=self.through_seq,
        ):
            blocks = []
            for told in self.teller.tell_all(page):
                blocks += self._chapter_headings(told)
                blocks.append(told_markdown(told))
                self.last_at = told.at
                self.told += 1
            if blocks:
                yield "\n\n".join(blocks) + "\n\n"
        yield self._tail()

    async def achunks(self) -> AsyncIterator[str]:
        """`chunks` for an ASGI server: each page is read on Django's thread for sync
        work, and sent before the next one is read."""
        chunks = self.chunks()
        advance = sync_to_async(lambda: next(chunks, None), thread_sensitive=True)
        while (chunk := await advance()) is not None:
            yield chunk

    def _chapter_index(self, seq: int) -> int:
        for n, chapter in enumerate(self.chapters):
            if seq <= chapter.to_seq:
                return n
        return len(self.chapters)

    def _chapter_headings(self, told: Told) -> list[str]:
        """The headings (with their summaries) of the chapters up to `told`'s, once each."""
        target = self._chapter_index(told.seq)
        blocks = []
        while self.chapter_shown < target:
            self.chapter_shown += 1
            n = self.chapter_shown
            date = f" \u00b7 {_day(told.at)}" if n == target else ""
            blocks.append(f"## Chapter {n + 1}{date}")
            if n < len(self.chapters) and self.chapters[n].usable:
                blocks.append(f"> *In short:* {md_escape(self.chapters[n].text)}")
        return blocks

    def _head(self) -> str:
        campaign = self.state.get("campaign") or {}
        name = md_escape(self.membership.campaign.name)
        lines = [f"# {name}", ""]
        about = f"The journal of {md_escape(self.membership.display_name)}"
        edition = campaign.get("edition") or self.membership.campaign.edition
        if edition:
            about += f", a {md_escape(edition)} campaign"
        lines.append(
            f"*{about}: the story so far, as {md_escape(self.membership.display_name)} "
            "may read it.*"
        )
        premise = campaign.get("premise")
        if isinstance(premise, str) and premise.strip():
            lines += ["", f"*{md_escape(premise)}*"]
        cast = []
        for character in (self.state.get("characters") or {}).values():
            if not isinstance(character, dict) or not character.get("name"):
                continue
            name = str(character["name"])
            owner = self.teller.name_of(character.get("owner_user_id"))
            what = character_kind(character)
            details = [what] if what else []
            if character.get("owner_user_id") and owner != name:
                details.append(f"played by {owner}")
            entry = f"- {md_escape(name)}"
            cast.append(entry + (f" ({md_escape(', '.join(details))})" if details else ""))
        if cast:
            lines += ["", "**The party**", "", *cast]
        return "\n".join(lines) + "\n\n"

    def _tail(self) -> str:
        blocks = []
        # Chapters summarized but with nothing this member may be told after the last
        # thing told (rare): their headings still mark where the story went.
        while self.chapter_shown < len(self.chapters) - 1:
            self.chapter_shown += 1
            blocks.append(f"## Chapter {self.chapter_shown + 1}")
            chapter = self.chapters[self.chapter_shown]
            if chapter.usable:
                blocks.append(f"> *In short:* {md_escape(chapter.text)}")
        if not self.told:
            blocks.append("*Nothing has happened yet.*")
        when = _day(self.last_at) if self.last_at else _day(timezone.now())
        blocks += ["---", f"*The story so far, up to {when}.*"]
        return "\n\n".join(blocks) + "\n"
