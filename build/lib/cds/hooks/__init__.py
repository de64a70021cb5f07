"""CDS Hooks without HTTP: the request, gathering data, authentication, the hook call, feedback, the store."""
