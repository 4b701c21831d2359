"""The e-mail worker: ``celery -A tasks worker``.

``tasks.app`` is the Celery application configured from the environment
(see :mod:`tasks.settings` for the ``LIVENOTIFY_*`` variables); it is built
on first access, so that the server can import :mod:`tasks.celery_app` to
publish without reading the worker's settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .celery_app import QUEUE, SEND_MAIL, create_app, describe_broker

if TYPE_CHECKING:
    from celery import Celery, Task

    from .send import Mailer
    from .settings import MailSettings

    app: Celery
    send_mail: Task
    mailer: Mailer
    settings: MailSettings

__all__ = ["QUEUE", "SEND_MAIL", "app", "create_app", "mailer", "send_mail", "settings"]

_LAZY = ("app", "send_mail", "mailer", "settings")


def _build() -> None:
    from celery import signals

    from .lifeline import watch_parent_from_env
    from .send import register
    from .settings import MailSettings

    settings = MailSettings.from_env()
    app = create_app(settings.broker, settings.data_dir)
    send_mail, mailer = register(app, settings)

    @signals.worker_ready.connect(weak=False)  # type: ignore[untyped-decorator]
    def _announce(**_: Any) -> None:
        import logging

        logging.getLogger("tasks").info(
            "mail worker ready: %s; broker %s",
            mailer.describe(),
            describe_broker(settings.broker, settings.data_dir),
        )
        watch_parent_from_env()

    globals().update(app=app, send_mail=send_mail, mailer=mailer, settings=settings)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        _build()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
