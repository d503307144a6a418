//! A minimal HTTP/1.1 reader and writer for the tests' proxies in front of moto (answering what moto
//! lacks, or failing on purpose): one message per connection, `Content-Length` bodies.
#![allow(clippy::unwrap_used)] // test support: a panic is a failed test

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

/// An HTTP/1.1 message: its first line, headers and body.
pub type Message = (String, Vec<(String, String)>, Vec<u8>);

/// Reads one HTTP/1.1 message (head + Content-Length body).
pub fn read_message(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Message>> {
    let mut first = String::new();
    if reader.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Some((first.trim_end().to_string(), headers, body)))
}

/// Writes one response (`Connection: close`).
pub fn respond(conn: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) -> std::io::Result<()> {
    write!(conn, "HTTP/1.1 {status}\r\n")?;
    for (k, v) in headers {
        if !["content-length", "connection", "transfer-encoding"].contains(&k.to_ascii_lowercase().as_str()) {
            write!(conn, "{k}: {v}\r\n")?;
        }
    }
    write!(conn, "Content-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
    conn.write_all(body)?;
    conn.flush()
}

/// Listens on a free loopback port and runs `handle` on each connection, in a thread of its own;
/// returns the listener's URL. The proxies of the tests are each a `handle`.
pub fn serve(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let handle = handle.clone();
            std::thread::spawn(move || handle(conn));
        }
    });
    url
}
