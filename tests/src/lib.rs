//! Support for the end-to-end tests in `tests/` and the streaming benchmark (`src/bin`): [`stack`] runs
//! the services as real processes against the project's real Kafka broker.

pub mod stack;
