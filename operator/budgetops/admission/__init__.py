"""Admission: from an AdmissionReview to charges against budgets, and the webhook serving it."""
