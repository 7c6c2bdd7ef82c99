"""Seams for billing (issue 6): around every model call of a DM turn.

`model_call_starting` is sent before a call with the worst-case size of it
(`input_tokens` of the prompt plus `max_tokens`); a receiver may raise a DomainError
(code `budget_exceeded`, say) to refuse it, and the turn then ends with `turn_failed`
carrying that code, without calling the model. `model_call_finished` is sent after the
call with its `usage` (an `orchestrator.adapters.Usage`), or with `usage=None` and an
`error` code when it failed, so a reservation can be settled or released.
"""

from django.dispatch import Signal

# kwargs: campaign_id, turn_id, request_id, provider, model, purpose, user_ids,
#         input_tokens, max_tokens
model_call_starting = Signal()
# kwargs: campaign_id, turn_id, request_id, provider, model, purpose, user_ids, usage, error
model_call_finished = Signal()
