//! Test support for the notes and client tests: the app under test
//! ([`app`]) and its JSON ([`json`]). Their PostgreSQL servers are the
//! shared test crate's ([`zdd_e2e::postgres`]): every test starts one of
//! its own on 127.0.0.1 ([`zdd_e2e::postgres::Pg::start_loopback`]; the
//! app speaks TCP only), stopped and its folder removed when dropped, and
//! runs its SQL with `psql`, so the tests check the app's client against
//! an independent one.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod app;
pub mod json;
