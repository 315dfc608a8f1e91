"""Accounts: users and roles, password hashing, the login throttle, sessions, the first admin."""

from .first_admin import StartupError, create_initial_admin
from .passwords import Passwords
from .service import (
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

__all__ = [
    "ROLES",
    "AccountError",
    "Auth",
    "InvalidAccountInput",
    "LastAdmin",
    "LoginFailed",
    "LoginLocked",
    "Passwords",
    "Session",
    "StartupError",
    "User",
    "UserNotFound",
    "UsernameTaken",
    "check_password",
    "check_username",
    "create_initial_admin",
]
