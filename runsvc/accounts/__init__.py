"""Accounts: users and roles, password hashing, the login throttle, sessions, API tokens, the first
admin."""

from .first_admin import StartupError, create_initial_admin
from .passwords import HashingBusy, Passwords
from .service import (
    MAX_PASSWORD_CHARS,
    MIN_PASSWORD_CHARS,
    ROLES,
    AccountError,
    Auth,
    InvalidAccountInput,
    LastAdmin,
    LoginFailed,
    LoginLocked,
    Session,
    User,
    UsernameTaken,
    UserNotFound,
    check_password,
    check_username,
)
from .tokens import ApiToken, ApiTokens, RoleTooHigh, TokenNotFound

__all__ = [
    "MAX_PASSWORD_CHARS",
    "MIN_PASSWORD_CHARS",
    "ROLES",
    "AccountError",
    "ApiToken",
    "ApiTokens",
    "Auth",
    "HashingBusy",
    "InvalidAccountInput",
    "LastAdmin",
    "LoginFailed",
    "LoginLocked",
    "Passwords",
    "RoleTooHigh",
    "Session",
    "StartupError",
    "TokenNotFound",
    "User",
    "UserNotFound",
    "UsernameTaken",
    "check_password",
    "check_username",
    "create_initial_admin",
]
