"""The contract shared by agent and server: gRPC messages and the IMDS credentials document."""
