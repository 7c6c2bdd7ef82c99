from __future__ import annotations

from django import forms

from .events import (
    PREMISE_MAX_CHARS,
    SAFETY_ITEM_MAX_CHARS,
    SAFETY_ITEMS_MAX,
    TONE_MAX_CHARS,
)
from .models import Campaign


def _one_per_line(text: str, label: str) -> list[str]:
    """A textarea's lines as a list: blank lines and repeats dropped, each one short."""
    items: list[str] = []
    for line in (text or "").splitlines():
        item = " ".join(line.split())
        if item and item not in items:
            items.append(item)
    too_long = [n for n, item in enumerate(items, start=1) if len(item) > SAFETY_ITEM_MAX_CHARS]
    if too_long:
        raise forms.ValidationError(
            f"Keep each of your {label} under {SAFETY_ITEM_MAX_CHARS} characters "
            f"(line {too_long[0]} is longer)."
        )
    if len(items) > SAFETY_ITEMS_MAX:
        raise forms.ValidationError(
            f"At most {SAFETY_ITEMS_MAX} {label}, one per line (you wrote {len(items)})."
        )
    return items


class CampaignCreateForm(forms.Form):
    name = forms.CharField(max_length=120)
    edition = forms.CharField(max_length=40, initial="5e")
    display_name = forms.CharField(max_length=60, required=False, label="Your name at the table")
    premise = forms.CharField(
        max_length=PREMISE_MAX_CHARS,
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="What the story is about, in a few sentences. The DM opens the first "
        "scene from it.",
    )
    tone = forms.CharField(
        max_length=TONE_MAX_CHARS,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "grim, cosy, heroic, eerie…"}),
        help_text="How the story should feel.",
    )
    turn_mode = forms.ChoiceField(
        choices=[
            (Campaign.TurnMode.FREE, "Free: the DM answers as the table acts"),
            (Campaign.TurnMode.ROUNDS, "Rounds: the DM waits for every player present"),
        ],
        initial=Campaign.TurnMode.FREE,
        required=False,  # a form without it (an older page, a script) plays free
        label="Turns",
        help_text="The GM can change it later.",
    )
    lines = forms.CharField(
        required=False,
        label="Lines",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "one per line"}),
        help_text="Things that never appear in the story, not even hinted at.",
    )
    veils = forms.CharField(
        required=False,
        label="Veils",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "one per line"}),
        help_text="Things that may happen in the story, but offscreen: the DM fades to black.",
    )

    # Shown in their own groups on the page (templates/campaigns/list.html).
    STORY_FIELDS = ("premise", "tone", "turn_mode")
    SAFETY_FIELDS = ("lines", "veils")

    def clean_turn_mode(self) -> str:
        return self.cleaned_data.get("turn_mode") or Campaign.TurnMode.FREE

    def clean_lines(self) -> list[str]:
        return _one_per_line(self.cleaned_data.get("lines", ""), "lines")

    def clean_veils(self) -> list[str]:
        return _one_per_line(self.cleaned_data.get("veils", ""), "veils")

    def basic_fields(self) -> list[forms.BoundField]:
        skip = {*self.STORY_FIELDS, *self.SAFETY_FIELDS}
        return [field for field in self if field.name not in skip]

    def story_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.STORY_FIELDS]

    def safety_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.SAFETY_FIELDS]


class CampaignJoinForm(forms.Form):
    invite_code = forms.CharField(max_length=16)
    display_name = forms.CharField(max_length=60, required=False, label="Your character's name")
