//! Integration tests of queue-server.
