"""The demo service, which grows into the incident lab: a real service that can reproduce
each incident lifesigns exists to end."""
