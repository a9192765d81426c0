"""The lease API over HTTP: routes and wire format; what each call does is usecases/leasing.py."""
