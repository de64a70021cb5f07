"""One evaluation: FHIR resources -> validated facts -> rules engine -> cards. No HTTP, no storage."""
