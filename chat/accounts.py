"""Accounts: sign-up (Django's UserCreationForm, so the password validators apply), log-in and log-out,
password change and reset by e-mail (Django's views).

Log-in is throttled by django-axes (settings AXES_*: a username and address pair is locked out for a
while after too many wrong passwords); log-in attempts, sign-ups and reset e-mails are limited per
client address by django-ratelimit, counted in the shared Redis cache.
"""

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import UserCreationForm
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import path, reverse_lazy
from django.views.decorators.debug import sensitive_post_parameters
from django_ratelimit.core import get_usage, is_ratelimited


def _too_many(request, action: str):
    """A 429 page: `action` (e.g. "sign-ups") from this address passed its rate."""
    return render(request, "registration/rate_limited.html", {"action": action}, status=429)


def _signups_left(request) -> bool:
    """Whether this client address may create another account in SIGNUP_RATE's current window.

    Only created accounts count. When the counter cannot be read (Redis down), the answer is no.
    """
    usage = get_usage(request, group="signup", key="ip", rate=settings.SIGNUP_RATE, increment=False)
    return bool(usage) and usage["limit"] > 0 and usage["count"] < usage["limit"]


def _count_signup(request) -> None:
    get_usage(request, group="signup", key="ip", rate=settings.SIGNUP_RATE, increment=True)


@sensitive_post_parameters("password1", "password2")
def signup(request):
    """Create an account and log straight in; closed when SIGNUP_ENABLED is false."""
    if not settings.SIGNUP_ENABLED:
        raise Http404("Sign-up is closed on this server.")
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    if request.method == "POST" and not _signups_left(request):
        return _too_many(request, "sign-ups")
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        _count_signup(request)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect(settings.LOGIN_REDIRECT_URL)
    return render(request, "registration/signup.html", {"form": form}, status=400 if form.errors else 200)


class LoginView(auth_views.LoginView):
    """Django's log-in, plus LOGIN_RATE attempts per client address (whatever the usernames), so
    guessing across many accounts from one address stays slow; axes locks out single accounts."""

    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        if is_ratelimited(request, group="login", key="ip", rate=settings.LOGIN_RATE, increment=True):
            return _too_many(request, "log-in attempts")
        return super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "signup_enabled": settings.SIGNUP_ENABLED}


class PasswordResetView(auth_views.PasswordResetView):
    """Mail a reset link; at most PASSWORD_RESET_RATE requests per address, so nobody floods an inbox."""

    success_url = reverse_lazy("password_reset_done")

    def post(self, request, *args, **kwargs):
        if is_ratelimited(
            request, group="password_reset", key="ip", rate=settings.PASSWORD_RESET_RATE, increment=True
        ):
            return _too_many(request, "password reset e-mails")
        return super().post(request, *args, **kwargs)


urlpatterns = [
    path("signup/", signup, name="signup"),
    path("login/", LoginView.as_view(), name="login"),
    # Django logs out on POST only, so a link or prefetch cannot sign anyone out.
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "password/",
        auth_views.PasswordChangeView.as_view(success_url=reverse_lazy("password_change_done")),
        name="password_change",
    ),
    path("password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("password/reset/", PasswordResetView.as_view(), name="password_reset"),
    path("password/reset/sent/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path(
        "password/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(success_url=reverse_lazy("password_reset_complete")),
        name="password_reset_confirm",
    ),
    path(
        "password/reset/complete/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
]
