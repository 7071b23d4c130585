//! A task for the end-to-end tests: it answers every request with its task ID and the
//! address it sees the client at, `TASK_ID CLIENT_IP`, so that a test can tell which replica
//! answered and whether the client's address was kept.
//!
//! `essaim-test-server tcp PORT` answers HTTP/1.0 `GET`s; `essaim-test-server udp PORT`
//! answers each datagram with one datagram. The port the runtime gives in `$PORT`, when it
//! gives one, wins: a task in its node's namespace listens where its host port is.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(protocol), Some(port)) = (args.get(1), args.get(2).and_then(|p| p.parse().ok()))
    else {
        eprintln!("usage: essaim-test-server tcp|udp PORT");
        std::process::exit(2);
    };
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(port);
    let task = std::env::var("ESSAIM_TASK_ID").unwrap_or_default();
    let served = match protocol.as_str() {
        "tcp" => serve_tcp(port, &task),
        "udp" => serve_udp(port, &task),
        other => {
            eprintln!("unknown protocol {other:?}: tcp or udp");
            std::process::exit(2);
        }
    };
    if let Err(error) = served {
        eprintln!("essaim-test-server: {error}");
        std::process::exit(1);
    }
}

fn serve_tcp(port: u16, task: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    println!("listening on tcp {port}");
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let task = task.to_string();
        std::thread::spawn(move || {
            let _ = answer(stream, &task);
        });
    }
    Ok(())
}

fn answer(mut stream: TcpStream, task: &str) -> std::io::Result<()> {
    let client = stream.peer_addr()?.ip();
    let mut reader = BufReader::new(stream.try_clone()?);
    // The request ends with an empty line.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 && line.trim_end() != "" {
        line.clear();
    }
    let body = format!("{task} {client}\n");
    write!(
        stream,
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn serve_udp(port: u16, task: &str) -> std::io::Result<()> {
    let socket = UdpSocket::bind(("0.0.0.0", port))?;
    println!("listening on udp {port}");
    let mut buffer = [0u8; 1500];
    loop {
        let (_, from) = socket.recv_from(&mut buffer)?;
        let _ = socket.send_to(format!("{task} {}\n", from.ip()).as_bytes(), from);
    }
}
