//! The README's console session, replayed against the demo: each `curl` command is sent as curl
//! sends it, and each answer must match the README's text byte for byte (the `date` header aside).

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::demo::start;

const README: &str = include_str!("../README.md");

/// One `$ command` of a session and the output the README shows under it.
#[derive(Debug)]
struct Step {
    command: String,
    output: Vec<String>,
}

/// What one curl command sends, and whether it prints the status line and headers (`-i`).
#[derive(Debug)]
struct CurlRequest {
    method: String,
    authority: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
    include: bool,
}

/// A response as curl shows it with `-i`: the status line, the header lines and the body.
#[derive(Debug, PartialEq)]
struct Shown {
    status_line: Option<String>,
    headers: Vec<String>,
    body: String,
}

/// Every ```` ```console ```` block of `text`, as its steps.
fn sessions(text: &str) -> Vec<Vec<Step>> {
    let mut sessions = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```console\n") {
        let block = &rest[start + "```console\n".len()..];
        let end = block.find("\n```").expect("a console block is closed");
        sessions.push(steps(&block[..end]));
        rest = &block[end..];
    }
    sessions
}

fn steps(block: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut lines = block.lines();
    while let Some(line) = lines.next() {
        if let Some(command) = line.strip_prefix("$ ") {
            let mut command = command.to_owned();
            while command.ends_with('\\') {
                command.pop();
                command.push_str(lines.next().expect("a continued command goes on").trim_start());
            }
            steps.push(Step { command, output: Vec::new() });
        } else {
            let step = steps.last_mut().unwrap_or_else(|| panic!("output before any command: {line:?}"));
            step.output.push(line.to_owned());
        }
    }
    steps
}

/// The words of a shell command: blanks separate them; single quotes keep what they hold as is,
/// double quotes too (no escapes are used in the README's commands).
fn words(command: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut in_word) = (Vec::new(), String::new(), None, false);
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(quote.is_none(), "an unclosed quote in `{command}`");
    if in_word {
        words.push(word);
    }
    words
}

/// The request a `curl …` command sends: its method (`-X`, else POST with `-d`, else GET), the
/// URL's authority and target, its `-H` headers, and the `-d` body with curl's default type.
fn curl(command: &str) -> CurlRequest {
    let words = words(command);
    assert_eq!(words.first().map(String::as_str), Some("curl"), "the session runs only curl: `{command}`");
    let (mut method, mut url, mut headers, mut body, mut include) = (None, None, Vec::new(), None, false);
    let mut args = words[1..].iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} without a value in `{command}`")).clone();
        match arg.as_str() {
            "-i" | "--include" => include = true,
            "-X" | "--request" => method = Some(value()),
            "-H" | "--header" => {
                let header = value();
                let (name, value) = header.split_once(':').unwrap_or_else(|| panic!("not a header: {header}"));
                headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
            "-d" | "--data" | "--data-raw" => body = Some(value()),
            option if option.starts_with('-') => panic!("curl's {option} is not replayed by this test: `{command}`"),
            _ => url = Some(arg.clone()),
        }
    }
    let url = url.unwrap_or_else(|| panic!("no URL in `{command}`"));
    let url = url.strip_prefix("http://").unwrap_or(&url);
    let (authority, target) = url.find('/').map_or((url, "/"), |slash| url.split_at(slash));
    if body.is_some() && !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type")) {
        headers.push(("Content-Type".to_owned(), "application/x-www-form-urlencoded".to_owned()));
    }
    let method = method.unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.to_owned());
    CurlRequest { method, authority: authority.to_owned(), target: target.to_owned(), headers, body, include }
}

/// Sends `request` to `addr` as curl does, and reads the response its `Content-Length` (or
/// chunked encoding) delimits.
fn send(addr: SocketAddr, request: &CurlRequest) -> Shown {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: curl/8\r\nAccept: */*\r\n",
        request.method, request.target, request.authority
    );
    for (name, value) in &request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = request.body.as_deref().unwrap_or("");
    if request.body.is_some() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    stream.write_all(format!("{head}\r\n{body}").as_bytes()).unwrap();

    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end_matches("\r\n");
        if line.is_empty() {
            break;
        }
        headers.push(line.to_owned());
    }
    let header = |wanted: &str| {
        headers.iter().find_map(|line| line.split_once(':').filter(|(name, _)| name.eq_ignore_ascii_case(wanted)))
    };
    let body = if let Some((_, length)) = header("content-length") {
        let mut body = vec![0; length.trim().parse().unwrap()];
        reader.read_exact(&mut body).unwrap();
        body
    } else if header("transfer-encoding").is_some_and(|(_, coding)| coding.trim() == "chunked") {
        chunked(&mut reader)
    } else {
        panic!("a response without a length to `{} {}`: {headers:?}", request.method, request.target);
    };
    Shown {
        status_line: Some(status_line.trim_end_matches("\r\n").to_owned()),
        headers: headers.into_iter().filter(|line| !line.to_ascii_lowercase().starts_with("date:")).collect(),
        body: String::from_utf8(body).expect("a UTF-8 body"),
    }
}

fn chunked(reader: &mut impl std::io::BufRead) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).unwrap();
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap(), 16).unwrap();
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).unwrap();
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// What the README shows under a command: with `-i` the status line, the headers up to the
/// first blank line, then the body; without it the body alone. Blank lines that separate the
/// output from the next command are not part of the body.
fn shown(output: &[String], include: bool) -> Shown {
    let mut end = output.len();
    while end > 0 && output[end - 1].is_empty() {
        end -= 1;
    }
    let output = &output[..end];
    if !include {
        return Shown { status_line: None, headers: Vec::new(), body: output.join("\n") };
    }
    let (status_line, rest) = output.split_first().expect("`curl -i` shows a status line");
    let blank = rest.iter().position(String::is_empty).unwrap_or(rest.len());
    let body = rest.get(blank + 1..).unwrap_or_default().join("\n");
    Shown { status_line: Some(status_line.clone()), headers: rest[..blank].to_vec(), body }
}

/// Each difference between what the demo answered and what the README shows, in words.
fn differences(command: &str, answered: &Shown, readme: &Shown) -> Vec<String> {
    let mut found = Vec::new();
    if readme.status_line.is_some() && answered.status_line != readme.status_line {
        found.push(format!("status line: demo {:?}, README {:?}", answered.status_line, readme.status_line));
    }
    if readme.status_line.is_some() && answered.headers != readme.headers {
        found.push(format!("headers (but date): demo {:?}, README {:?}", answered.headers, readme.headers));
    }
    if answered.body != readme.body {
        found.push(format!("body: demo {:?}, README {:?}", answered.body, readme.body));
    }
    found.into_iter().map(|difference| format!("`{command}`: {difference}")).collect()
}

#[test]
fn the_readme_session_is_what_the_demo_answers() {
    let sessions = sessions(README);
    assert!(!sessions.is_empty(), "README.md shows a console session");
    let mut drift = Vec::new();
    for session in sessions {
        let demo = start(&[]);
        let mut sent = 0;
        for step in session {
            if step.command.starts_with('#') {
                assert!(step.output.iter().all(String::is_empty), "a comment prints nothing: {step:?}");
                continue;
            }
            let request = curl(&step.command);
            let answered = send(demo.addr, &request);
            drift.extend(differences(&step.command, &answered, &shown(&step.output, request.include)));
            sent += 1;
        }
        assert!(sent > 0, "a session sends at least one request");
    }
    assert!(drift.is_empty(), "README.md's session differs from what the demo answers:\n{}", drift.join("\n"));
}

#[test]
fn commands_are_read_as_the_shell_and_curl_read_them() {
    let request = curl(r#"curl -i localhost:3000/orders?a=1 -H 'Authorization: Bearer a b' -d '{"x": 1}'"#);
    assert_eq!((request.method.as_str(), request.authority.as_str()), ("POST", "localhost:3000"));
    assert_eq!(request.target, "/orders?a=1");
    assert_eq!(request.body.as_deref(), Some(r#"{"x": 1}"#));
    let headers = [("Authorization", "Bearer a b"), ("Content-Type", "application/x-www-form-urlencoded")];
    let headers: Vec<(String, String)> = headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
    assert_eq!(request.headers, headers);
    assert!(request.include);
    let get = curl("curl localhost:3000/orders -X DELETE");
    assert_eq!((get.method.as_str(), get.target.as_str(), get.include), ("DELETE", "/orders", false));

    let steps = steps("$ curl -i a/ \\\n     -H 'K: v'\nHTTP/1.1 200 OK\nx: y\n\nbody\n\n$ # done");
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].command, "curl -i a/ -H 'K: v'");
    let shown = shown(&steps[0].output, true);
    assert_eq!(shown.status_line.as_deref(), Some("HTTP/1.1 200 OK"));
    assert_eq!((shown.headers, shown.body.as_str()), (vec!["x: y".to_owned()], "body"));
}
