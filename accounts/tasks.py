"""Mail goes out in the background (rpgai.tasks.enqueue): a password reset request is
answered at once, in the same time whether the address has an account or not, and a
slow or unreachable mail server never holds a web request."""

from __future__ import annotations

import smtplib

from celery import Task, shared_task
from django.conf import settings
from django.core.mail import EmailMessage

RETRIES_MAX = 3


@shared_task(
    bind=True,
    name="accounts.tasks.mail_send",
    acks_late=True,
    soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
    time_limit=settings.CELERY_TASK_TIME_LIMIT,
    max_retries=RETRIES_MAX,
)
def mail_send(self: Task, subject: str, body: str, to: list[str], from_email: str = "") -> int:
    """Send one plain-text message (EMAIL_BACKEND: the console unless SMTP is set)."""
    message = EmailMessage(subject=subject, body=body, from_email=from_email or None, to=list(to))
    try:
        return message.send()
    except (smtplib.SMTPException, OSError) as exc:
        if self.request.called_directly:
            raise
        raise self.retry(exc=exc, countdown=2 ** (self.request.retries + 2)) from exc
