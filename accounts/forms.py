from typing import Any

from django import forms
from django.contrib.auth import forms as auth_forms
from django.contrib.auth.forms import UserCreationForm
from django.template.loader import render_to_string

from rpgai.tasks import enqueue

from . import tasks
from .models import User

EMAIL_HELP = "Optional. Only used to send you a link if you forget your password."


class SignupForm(UserCreationForm):
    email = forms.EmailField(required=False, help_text=EMAIL_HELP)

    class Meta:
        model = User
        fields = ("username", "email")


class PasswordResetForm(auth_forms.PasswordResetForm):
    """Django's reset form; the mail goes out in the background (accounts.tasks), so the
    answer comes as fast for an address with an account as for one without."""

    def send_mail(
        self,
        subject_template_name: str,
        email_template_name: str,
        context: dict[str, Any],
        from_email: str | None,
        to_email: str,
        html_email_template_name: str | None = None,
    ) -> None:
        subject = "".join(render_to_string(subject_template_name, context).splitlines())
        body = render_to_string(email_template_name, context)
        enqueue(
            tasks.mail_send, subject=subject, body=body, to=[to_email], from_email=from_email or ""
        )


class PasswordConfirmForm(forms.Form):
    """Your password again, before something that cannot be undone."""

    password = forms.CharField(
        label="Your password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        if not self.user.check_password(password):
            raise forms.ValidationError("That is not your password.", code="wrong_password")
        return password


class EmailForm(PasswordConfirmForm):
    email = forms.EmailField(required=False, label="Email", help_text=EMAIL_HELP)
    field_order = ("email", "password")
