from django import forms


class CampaignCreateForm(forms.Form):
    name = forms.CharField(max_length=120)
    edition = forms.CharField(max_length=40, initial="5e")
    display_name = forms.CharField(max_length=60, required=False, label="Your name at the table")


class CampaignJoinForm(forms.Form):
    invite_code = forms.CharField(max_length=16)
    display_name = forms.CharField(max_length=60, required=False, label="Your character's name")
