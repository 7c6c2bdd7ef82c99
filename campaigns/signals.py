"""Signals other apps listen to; `campaigns` itself imports none of them."""

import django.dispatch

# Sent after the transaction that appended `events` (a list of Event) has committed.
events_committed = django.dispatch.Signal()
