"""The databases of one deployment: the hospitalization database and its companions, named after it.

Kept apart from the roles (access) and the audit log (audit) because both, and the release and the
backups, need the names and nothing else of each other.
"""

from __future__ import annotations

from healthcare_assets.plumbing import settings


def databases(database: str | None = None) -> dict[str, str]:
    """The hospitalization database and its companions, named after it (healthcare_db ->
    healthcare_analytics, healthcare_doctor_app, healthcare_audit)."""
    main = database or settings.environment().database
    prefix = main.removesuffix("_db")
    return {"main": main, "analytics": f"{prefix}_analytics", "doctor_app": f"{prefix}_doctor_app",
            "audit": f"{prefix}_audit"}
