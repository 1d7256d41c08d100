"""The contract shared by agent and server: gRPC messages, the status-code table
(``status``), the client side both ``kiam agent`` and ``kiam health`` dial with
(``client``), and the IMDS credentials document."""
