"""Synthesize the DM's sound cues (settings.AUDIO_CUES) into campaigns/static/campaigns/cues/.

Every cue is made here from sine waves, band-limited sawtooths, seeded noise, a few
filters and a Karplus-Strong string: no sample library, no recording, so the files are
this project's own work (dedicated CC0, see the folder's LICENSE.md and docs/sounds.md).

    .venv/bin/python tools/make_cues.py            # rewrite the committed files
    .venv/bin/python tools/make_cues.py --out DIR  # write them somewhere else
    .venv/bin/python tools/make_cues.py --check    # exit 1 when the committed files differ

The output is deterministic: each cue's noise comes from its own generator seeded by the
cue's name, and the WAV header carries no date, so a run writes the same bytes again
(tests/test_sound_cues.py checks that against the committed files). Every file is mono,
22,050 Hz, 16-bit PCM, peak-normalized to -3 dBFS, with a short fade in and out so that
it starts and ends at silence.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import sys
import wave
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

RATE = 22_050
PEAK_DBFS = -3.0
FADE_IN_SECONDS = 0.004
FADE_OUT_SECONDS = 0.04
FULL_SCALE = 32767
OUT = Path(__file__).resolve().parent.parent / "campaigns" / "static" / "campaigns" / "cues"

Array = np.ndarray


# --- building blocks ----------------------------------------------------------------------


def times(seconds: float) -> Array:
    return np.arange(round(seconds * RATE)) / RATE


def rng_for(name: str) -> np.random.Generator:
    """The cue's own noise: a PCG64 generator seeded by the cue's name."""
    return np.random.Generator(np.random.PCG64(zlib.crc32(name.encode())))


def noise(rng: np.random.Generator, seconds: float) -> Array:
    return rng.random(round(seconds * RATE)) * 2.0 - 1.0


def place(track: Array, sound: Array, at: float, gain: float = 1.0) -> None:
    """Mix `sound` into `track` starting at `at` seconds (cut at the track's end). Its
    last 5 ms fade out, so a sound cut short while still ringing makes no click."""
    start = round(at * RATE)
    end = min(len(track), start + len(sound))
    if end > start:
        piece = gain * sound[: end - start]
        n = min(len(piece), int(0.005 * RATE))
        piece[len(piece) - n :] *= np.linspace(1.0, 0.0, n)
        track[start:end] += piece


def phase_of(freq: Array | float, t: Array) -> Array:
    """Phase in cycles of a tone whose frequency may change over time."""
    if np.isscalar(freq):
        return float(freq) * t
    return np.cumsum(freq) / RATE


def harmonics(phase: Array, freq: Array | float, amps: Sequence[float]) -> Array:
    """Sum of harmonics k = 1.. of `phase` with amplitudes `amps`, each left out where it
    would pass 10 kHz (no aliasing below the 11,025 Hz Nyquist)."""
    freq = np.broadcast_to(np.asarray(freq, dtype=float), phase.shape)
    out = np.zeros_like(phase)
    for k, amp in enumerate(amps, start=1):
        if amp:
            out += amp * np.sin(2 * np.pi * k * phase) * (k * freq < 10_000)
    return out


def saw(phase: Array, freq: Array | float, count: int = 40) -> Array:
    return harmonics(phase, freq, [1.0 / k for k in range(1, count + 1)])


def brass(
    freq: float,
    seconds: float,
    *,
    attack: float = 0.06,
    release: float = 0.25,
    vibrato: float = 0.004,
    detune: float = 0.0,
    bright: float = 1.0,
) -> Array:
    """A horn-like note: harmonics that grow with loudness (a brass player's timbre)."""
    t = times(seconds)
    env = (1 - np.exp(-t / attack)) * np.clip((seconds - t) / release, 0, 1)
    wobble = 1 + vibrato * np.sin(2 * np.pi * 5.2 * t) * np.clip((t - 0.15) / 0.3, 0, 1)
    f = freq * (1 + detune) * wobble
    phase = phase_of(f, t)
    out = np.zeros_like(t)
    for k in range(1, 16):
        if k * freq >= 10_000:
            break
        out += np.sin(2 * np.pi * k * phase) * env ** (1 + 0.35 * k / bright) / k**1.1
    return out


def biquad(x: Array, b: Sequence[float], a: Sequence[float]) -> Array:
    b0, b1, b2 = b
    _, a1, a2 = a
    y = [0.0] * len(x)
    x1 = x2 = y1 = y2 = 0.0
    for n, xn in enumerate(x.tolist()):
        yn = b0 * xn + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2
        x2, x1, y2, y1 = x1, xn, y1, yn
        y[n] = yn
    return np.array(y)


def bandpass(x: Array, freq: float, q: float) -> Array:
    """RBJ band-pass, 0 dB at `freq`."""
    w = 2 * math.pi * freq / RATE
    alpha = math.sin(w) / (2 * q)
    a0 = 1 + alpha
    return biquad(x, (alpha / a0, 0.0, -alpha / a0), (1.0, -2 * math.cos(w) / a0, (1 - alpha) / a0))


def lowpass(x: Array, freq: float, q: float = 0.7071) -> Array:
    """RBJ low-pass (12 dB per octave)."""
    w = 2 * math.pi * freq / RATE
    alpha = math.sin(w) / (2 * q)
    a0 = 1 + alpha
    c = math.cos(w)
    return biquad(
        x,
        ((1 - c) / 2 / a0, (1 - c) / a0, (1 - c) / 2 / a0),
        (1.0, -2 * c / a0, (1 - alpha) / a0),
    )


def highpass(x: Array, freq: float, q: float = 0.7071) -> Array:
    w = 2 * math.pi * freq / RATE
    alpha = math.sin(w) / (2 * q)
    a0 = 1 + alpha
    c = math.cos(w)
    return biquad(
        x,
        ((1 + c) / 2 / a0, -(1 + c) / a0, (1 + c) / 2 / a0),
        (1.0, -2 * c / a0, (1 - alpha) / a0),
    )


def slow_random(rng: np.random.Generator, seconds: float, rate: float) -> Array:
    """A smooth random curve in about 0..1 that changes `rate` times a second."""
    curve = lowpass(lowpass(noise(rng, seconds), rate), rate)
    return 0.5 + 0.5 * curve / (np.max(np.abs(curve)) or 1.0)


def drum(pitch: float = 1.0, seconds: float = 0.7, rng: np.random.Generator | None = None) -> Array:
    """A low drum: a body whose pitch falls as the skin settles, the skin's higher modes
    (what a small speaker still plays) and the stick's thud."""
    t = times(seconds)
    f = pitch * (62 + 80 * np.exp(-t / 0.04))
    phase = phase_of(f, t)
    body = np.sin(2 * np.pi * phase) * np.exp(-t / 0.2)
    for ratio, gain, tau in ((1.59, 0.5, 0.12), (2.14, 0.4, 0.09), (2.65, 0.3, 0.07)):
        body += gain * np.sin(2 * np.pi * ratio * phase) * np.exp(-t / tau)
    if rng is not None:
        skin = bandpass(noise(rng, seconds), 350 * pitch, 1.2)
        body += 1.2 * skin * np.exp(-t / 0.05)
    return body * (1 - np.exp(-t / 0.002))


def pluck(freq: float, seconds: float, rng: np.random.Generator, decay: float = 0.996) -> Array:
    """Karplus-Strong: a burst of noise in a delay line that a low-pass averages each
    round, tuned to `freq` by a first-order all-pass for the delay's fractional part."""
    period = RATE / freq - 0.5  # the two-point average delays half a sample
    length = int(period)
    frac = period - length
    if frac < 0.1:  # keep the all-pass coefficient well inside (-1, 1)
        length -= 1
        frac += 1
    coef = (1 - frac) / (1 + frac)
    line = lowpass(noise(rng, length / RATE + 0.001)[:length], 3000).tolist()
    line = line + [0.0] * (length - len(line))
    out = [0.0] * round(seconds * RATE)
    previous = ap_in = ap_out = 0.0
    for n in range(len(out)):
        current = line[n % length]
        averaged = decay * 0.5 * (current + previous)
        previous = current
        ap_out = coef * averaged + ap_in - coef * ap_out
        ap_in = averaged
        line[n % length] = ap_out
        out[n] = current
    return np.array(out)


def ping(
    freqs: Sequence[float],
    decays: Sequence[float],
    seconds: float,
    amps: Sequence[float] | None = None,
) -> Array:
    """Struck metal: inharmonic partials, each with its own decay."""
    t = times(seconds)
    out = np.zeros_like(t)
    for i, (f, tau) in enumerate(zip(freqs, decays, strict=True)):
        if f < 10_000:
            out += (amps[i] if amps else 1.0) * np.sin(2 * np.pi * f * t) * np.exp(-t / tau)
    return out * (1 - np.exp(-t / 0.0005))


def note(name: str) -> float:
    """Equal-tempered frequency of a note name such as 'A4', 'C#5', 'Bb3'."""
    steps = {"C": -9, "D": -7, "E": -5, "F": -4, "G": -2, "A": 0, "B": 2}[name[0]]
    rest = name[1:]
    if rest[0] in "#b":
        steps += 1 if rest[0] == "#" else -1
        rest = rest[1:]
    return 440.0 * 2 ** ((steps + 12 * (int(rest) - 4)) / 12)


# --- the cues -------------------------------------------------------------------------------


def battle_start(rng: np.random.Generator) -> Array:
    """War drums building up, then a horn chord (an open fifth on D) over a last hit."""
    track = np.zeros(len(times(2.3)))
    beats = [(0.0, 1.0), (0.27, 0.6), (0.4, 0.6), (0.67, 1.0), (0.94, 0.7), (1.07, 0.7), (1.2, 0.8)]
    for at, gain in beats:
        place(track, drum(1.0, rng=rng), at, gain)
    place(track, drum(0.85, 0.9, rng=rng), 1.35, 1.3)
    for name, gain, detune in (
        ("D3", 1.0, -0.002),
        ("A3", 0.8, 0.002),
        ("D4", 0.6, 0.0),
        ("A4", 0.3, 0.001),
    ):
        place(
            track,
            brass(note(name), 0.95, attack=0.07, release=0.45, detune=detune),
            1.35,
            0.45 * gain,
        )
    return track


def victory(rng: np.random.Generator) -> Array:
    """A major fanfare: a rising C-major arpeggio, then the chord held."""
    track = np.zeros(len(times(1.9)))
    for i, name in enumerate(("G4", "C5", "E5")):
        place(track, brass(note(name), 0.16, attack=0.015, release=0.05, bright=1.4), i * 0.13, 0.8)
    for name, gain in (("G5", 0.9), ("C5", 0.55), ("E5", 0.5), ("C4", 0.45)):
        place(track, brass(note(name), 1.5, attack=0.03, release=0.6, bright=1.4), 0.39, gain)
    place(track, drum(1.1, 0.8, rng=rng), 0.39, 0.8)
    return track


def defeat(rng: np.random.Generator) -> Array:
    """A descending A-minor line, the last note sagging a semitone over a dark chord."""
    track = np.zeros(len(times(2.0)))
    for i, name in enumerate(("E4", "C4")):
        place(track, brass(note(name), 0.42, attack=0.03, release=0.12, bright=0.6), i * 0.4)
    t = times(1.2)
    f = note("A3") * 2 ** (-np.clip((t - 0.35) / 0.6, 0, 1) / 12)
    env = (1 - np.exp(-t / 0.04)) * np.clip((1.2 - t) / 0.6, 0, 1)
    sag = harmonics(phase_of(f, t), f, [1, 0.4, 0.25, 0.1, 0.06]) * env
    place(track, sag, 0.8)
    for name, gain in (("A2", 0.35), ("C3", 0.25), ("E3", 0.25)):
        place(track, brass(note(name), 1.2, attack=0.15, release=0.7, bright=0.5), 0.8, gain)
    return track


def door_creak(rng: np.random.Generator) -> Array:
    """A hinge: a sawtooth whose pitch sticks and slips upward and back, through the
    door's wooden resonances, with the rub of friction noise."""
    seconds = 1.35
    t = times(seconds)
    sweep = 38 + 90 * np.sin(np.pi * np.clip(t / 1.2, 0, 1)) ** 1.5
    f = sweep * (0.85 + 0.3 * slow_random(rng, seconds, 9))
    tone = saw(phase_of(f, t), f)
    wood = bandpass(tone, 620, 5) + 0.8 * bandpass(tone, 1250, 6) + 0.5 * bandpass(tone, 2500, 8)
    rub = bandpass(noise(rng, seconds), 2200, 1.5) * 0.07
    env = np.clip(t / 0.12, 0, 1) * np.clip((seconds - t) / 0.3, 0, 1)
    return (wood + rub) * env * (0.6 + 0.4 * slow_random(rng, seconds, 6))


def thunder(rng: np.random.Generator) -> Array:
    """A crack (bright noise bursts) and the long low rumble that rolls after it."""
    seconds = 2.6
    t = times(seconds)
    crack = np.zeros_like(t)
    for at, gain in ((0.02, 1.0), (0.09, 0.6), (0.16, 0.45)):
        burst = highpass(noise(rng, 0.3), 1200) * np.exp(-times(0.3) / 0.035)
        place(crack, burst, at, gain)
    rumble = lowpass(lowpass(noise(rng, seconds), 140), 180) * 9
    rumble += lowpass(lowpass(noise(rng, seconds), 450), 450) * 3
    rolls = 0.35 + 0.65 * slow_random(rng, seconds, 4)
    env = (1 - np.exp(-t / 0.12)) * np.exp(-t / 1.1)
    return 0.45 * crack + rumble * rolls * env


def rain(rng: np.random.Generator) -> Array:
    """Steady hiss (band-passed noise) with droplets plinking on top; fades in and out."""
    seconds = 2.3
    t = times(seconds)
    hiss = lowpass(highpass(noise(rng, seconds), 700), 5000) * 0.35
    hiss += lowpass(noise(rng, seconds), 400) * 0.15
    drops = np.zeros_like(t)
    count = int(seconds * 30)
    for at, pitch, gain in zip(
        rng.random(count) * seconds, rng.random(count), rng.random(count), strict=True
    ):
        dt = times(0.05)
        f = (1400 + 2600 * pitch) * (1 + 0.25 * dt / 0.05)
        drop = np.sin(2 * np.pi * phase_of(f, dt)) * np.exp(-dt / 0.01)
        place(drops, drop, at, 0.15 + 0.35 * gain)
    env = np.clip(t / 0.35, 0, 1) * np.clip((seconds - t) / 0.9, 0, 1)
    return (hiss + drops) * env


def sword_clash(rng: np.random.Generator) -> Array:
    """Two blades meeting twice: inharmonic metal partials that die away fast, a bright
    scrape of noise on each hit."""
    track = np.zeros(len(times(1.0)))
    ratios = (1.0, 1.47, 2.09, 2.56, 3.39, 4.21, 5.33)
    taus = (0.25, 0.2, 0.15, 0.12, 0.09, 0.07, 0.05)
    amps = (0.8, 1.0, 0.7, 0.6, 0.5, 0.4, 0.3)
    for at, base, gain in ((0.01, 1180, 1.0), (0.36, 1260, 0.8)):
        ring = ping([base * r for r in ratios], taus, 0.6, amps)
        # A pair of close partials beats: the shimmer of a blade.
        ring += 0.4 * ping([base * 2.09 + 7], [0.18], 0.6)
        shing = highpass(noise(rng, 0.2), 4000) * np.exp(-times(0.2) / 0.03)
        place(track, ring, at, gain)
        place(track, shing, at, 0.8 * gain)
    return track


def spell_cast(rng: np.random.Generator) -> Array:
    """Rising shimmering tones: a chord of sines gliding up an octave with a tremolo,
    chorused, and sparkles that thicken as it rises."""
    seconds = 1.5
    t = times(seconds)
    rise = 2 ** (np.clip(t / 1.0, 0, 1) ** 1.5)
    out = np.zeros_like(t)
    for i, base in enumerate((330.0, 440.0, 554.37, 659.26, 880.0)):
        trem = 0.7 + 0.3 * np.sin(2 * np.pi * 9 * t + i * 1.3)
        for detune in (0.0, 3.5):
            out += np.sin(2 * np.pi * phase_of((base + detune) * rise, t)) * trem / 5
    env = np.clip(t / 0.5, 0, 1) ** 2 * np.clip((seconds - t) / 0.5, 0, 1)
    sparkles = np.zeros_like(t)
    count = 26
    for at, pitch in zip(np.sort(1 - rng.random(count) ** 2) * 1.2, rng.random(count), strict=True):
        place(sparkles, ping([2500 + 4000 * pitch], [0.04], 0.2), at, 0.25)
    return out * env + sparkles * np.clip((seconds - t) / 0.4, 0, 1)


def monster_roar(rng: np.random.Generator) -> Array:
    """A low growl: a sawtooth around 80 Hz with vibrato and a falling end, noise that
    throbs with it, both through the throat's formants."""
    seconds = 1.6
    t = times(seconds)
    contour = 78 + 14 * np.sin(np.pi * np.clip(t / 1.0, 0, 1)) - 20 * np.clip(t - 1.0, 0, 1)
    f = (
        contour
        * (1 + 0.06 * np.sin(2 * np.pi * 6.5 * t))
        * (0.95 + 0.1 * slow_random(rng, seconds, 12))
    )
    phase = phase_of(f, t)
    voice = saw(phase, f, 60)
    throb = 0.55 + 0.45 * np.sin(2 * np.pi * phase)
    rasp = lowpass(noise(rng, seconds), 1500) * throb * (0.7 + 0.3 * np.sin(2 * np.pi * 27 * t))
    source = voice + 1.4 * rasp
    throat = (
        bandpass(source, 380, 2.0) + 0.7 * bandpass(source, 950, 3.0) + 0.25 * lowpass(source, 250)
    )
    env = (1 - np.exp(-t / 0.12)) * np.clip((seconds - t) / 0.6, 0, 1)
    return throat * env


def footsteps(rng: np.random.Generator) -> Array:
    """Five soft steps, heel then toe: low thumps with the scuff of a sole."""
    track = np.zeros(len(times(1.7)))
    t = times(0.25)
    for i in range(5):
        at = 0.05 + 0.34 * i
        gain = 0.8 + 0.2 * rng.random()
        f = 110 + 70 * np.exp(-t / 0.012)
        heel = 0.5 * np.sin(2 * np.pi * phase_of(f, t)) * np.exp(-t / 0.03)
        heel += 2.5 * bandpass(noise(rng, 0.25), 380, 1.0) * np.exp(-t / 0.03)
        heel *= 1 - np.exp(-t / 0.003)
        toe = bandpass(noise(rng, 0.25), 700, 0.8) * np.exp(-t / 0.02) * (1 - np.exp(-t / 0.004))
        place(track, heel, at, gain)
        place(track, toe, at + 0.07, 0.9 * gain)
    return track


def tavern(rng: np.random.Generator) -> Array:
    """A lute strummed (Karplus-Strong strings: G, C, G) over the murmur of a room."""
    seconds = 2.1
    t = times(seconds)
    track = np.zeros_like(t)
    strums = (
        (0.03, ("G3", "D4", "G4", "B4")),
        (0.72, ("C4", "E4", "G4", "C5")),
        (1.3, ("G3", "D4", "G4", "B4")),
    )
    for at, chord in strums:
        for i, name in enumerate(chord):
            place(track, pluck(note(name), seconds - at, rng), at + 0.028 * i, 0.5)
    babble = noise(rng, seconds)
    voices = bandpass(babble, 500, 1.2) + 0.6 * bandpass(babble, 1300, 2.5)
    syllables = slow_random(rng, seconds, 7) ** 2
    murmur = voices * syllables * 0.35
    clink = ping([3100, 4870, 6950], [0.08, 0.05, 0.04], 0.3, (1.0, 0.6, 0.4))
    place(track, clink, 1.62, 0.12)
    return track + murmur * np.clip(t / 0.3, 0, 1)


def treasure(rng: np.random.Generator) -> Array:
    """Coins jingling: a shower of short, high, inharmonic rings."""
    track = np.zeros(len(times(1.0)))
    count = 16
    for at, pitch, gain in zip(
        np.sort(rng.random(count) ** 1.6) * 0.75, rng.random(count), rng.random(count), strict=True
    ):
        base = 2600 + 1800 * pitch
        coin = ping([base, base * 1.51, base * 2.17], [0.09, 0.06, 0.04], 0.3, (1.0, 0.7, 0.45))
        place(track, coin, at, 0.4 + 0.6 * gain)
    return track


def heartbeat(rng: np.random.Generator) -> Array:
    """Two heartbeats, lub-dub, lub-dub: low, muffled thumps."""
    track = np.zeros(len(times(1.5)))
    t = times(0.3)

    def thump(f0: float) -> Array:
        phase = phase_of(f0 * (1 + 0.5 * np.exp(-t / 0.02)), t)
        partials = ((1, 0.7), (2, 0.8), (3, 0.6), (4, 0.3))
        body = sum(g * np.sin(2 * np.pi * k * phase) for k, g in partials)
        body += 1.5 * bandpass(noise(rng, 0.3), 220, 1.5)
        return lowpass(body, 400) * np.exp(-t / 0.06) * (1 - np.exp(-t / 0.008))

    for at in (0.05, 0.8):
        place(track, thump(60), at, 1.0)
        place(track, thump(75), at + 0.22, 0.7)
    return track


def dramatic_sting(rng: np.random.Generator) -> Array:
    """Dun, dun, DUN: two short low brass notes, then a diminished chord over a timpani hit."""
    track = np.zeros(len(times(1.5)))
    for at in (0.0, 0.22):
        place(track, brass(note("D3"), 0.16, attack=0.01, release=0.06), at, 0.6)
        place(track, brass(note("D2"), 0.16, attack=0.01, release=0.06), at, 0.4)
    for name, gain in (("D2", 0.5), ("D3", 0.6), ("F3", 0.45), ("Ab3", 0.45), ("D4", 0.3)):
        place(track, brass(note(name), 1.05, attack=0.02, release=0.7, vibrato=0.008), 0.44, gain)
    place(track, drum(0.9, 1.0, rng=rng), 0.44, 1.2)
    return track


def level_up(rng: np.random.Generator) -> Array:
    """A quick rising major arpeggio with a bright, soft square-ish tone, ending in a
    sparkle."""
    track = np.zeros(len(times(1.1)))
    names = ("C5", "E5", "G5", "C6", "E6")
    for i, name in enumerate(names):
        f = note(name)
        t = times(0.5 if i < len(names) - 1 else 0.8)
        tone = harmonics(f * t, f, [1, 0, 0.3, 0, 0.15, 0, 0.08]) * np.exp(-t / 0.18)
        place(track, tone * (1 - np.exp(-t / 0.003)), 0.065 * i, 0.5)
    for at, pitch in zip(0.33 + rng.random(8) * 0.35, rng.random(8), strict=True):
        place(track, ping([4000 + 3000 * pitch], [0.05], 0.25), at, 0.15)
    return track


# The cue names of settings.AUDIO_CUES that have a sound. "silence" has none on purpose:
# its cue is the room going quiet, so nothing plays.
CUES: dict[str, Callable[[np.random.Generator], Array]] = {
    "battle_start": battle_start,
    "victory": victory,
    "defeat": defeat,
    "door_creak": door_creak,
    "thunder": thunder,
    "rain": rain,
    "sword_clash": sword_clash,
    "spell_cast": spell_cast,
    "monster_roar": monster_roar,
    "footsteps": footsteps,
    "tavern": tavern,
    "treasure": treasure,
    "heartbeat": heartbeat,
    "dramatic_sting": dramatic_sting,
    "level_up": level_up,
}


# --- finishing and writing ------------------------------------------------------------------


def finish(sound: Array) -> Array:
    """DC removed, faded in and out (raised cosine: the first and last samples are 0),
    peak-normalized to PEAK_DBFS, as 16-bit integers."""
    x = sound - np.mean(sound)
    n_in = max(2, int(FADE_IN_SECONDS * RATE))
    n_out = max(2, int(FADE_OUT_SECONDS * RATE))
    x[:n_in] *= 0.5 - 0.5 * np.cos(np.pi * np.arange(n_in) / (n_in - 1))
    x[-n_out:] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(n_out) / (n_out - 1))
    x *= 10 ** (PEAK_DBFS / 20) / np.max(np.abs(x))
    return np.round(x * FULL_SCALE).astype("<i2")


def render(name: str) -> bytes:
    """The cue's WAV file, as bytes."""
    samples = finish(CUES[name](rng_for(name)))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder to write (default {OUT})")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when a file in --out differs"
    )
    parser.add_argument("names", nargs="*", help="only these cues (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(CUES))
    if unknown:
        parser.error(f"unknown cue(s): {', '.join(unknown)}; the cues are: {', '.join(CUES)}")
    differ = []
    if not args.check:
        args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or CUES:
        data = render(name)
        path = args.out / f"{name}.wav"
        seconds = (len(data) - 44) / 2 / RATE
        digest = hashlib.sha256(data).hexdigest()[:16]
        if args.check:
            same = path.exists() and path.read_bytes() == data
            if not same:
                differ.append(name)
            print(f"{'ok  ' if same else 'DIFF'} {path.name:20} {seconds:4.2f} s  sha256 {digest}")
        else:
            path.write_bytes(data)
            print(f"wrote {path} ({seconds:.2f} s, {len(data):,} bytes, sha256 {digest})")
    if differ:
        print(f"differ from the generator: {', '.join(differ)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
