//! Attribute macros of `mayfly-guest`. Use them through `mayfly_guest`, not directly.

use proc_macro::{Delimiter, TokenStream, TokenTree};

/// Marks a function as the HTTP handler of a web process type.
///
/// See `mayfly_guest::http_handler` for the documentation.
#[proc_macro_attribute]
pub fn http_handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    export("http_handler", attr, item, |name| {
        format!(
            "struct __MayflyHttpHandler;
            impl ::mayfly_guest::__private::IncomingHandler for __MayflyHttpHandler {{
                fn handle(
                    request: ::mayfly_guest::__private::IncomingRequest,
                    response_out: ::mayfly_guest::__private::ResponseOutparam,
                ) {{
                    ::mayfly_guest::http::__dispatch(request, response_out, {name});
                }}
            }}
            ::mayfly_guest::__private::export_http!(
                __MayflyHttpHandler with_types_in ::mayfly_guest::__private::http_world
            );"
        )
    })
}

/// Marks a function as the job handler of a job process type.
///
/// See `mayfly_guest::job_handler` for the documentation.
#[proc_macro_attribute]
pub fn job_handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    export("job_handler", attr, item, |name| {
        format!(
            "struct __MayflyJobHandler;
            impl ::mayfly_guest::__private::JobHandler for __MayflyJobHandler {{
                fn handle(
                    job: ::mayfly_guest::__private::WitJob,
                ) -> ::core::result::Result<(), ::mayfly_guest::__private::WitJobError> {{
                    ::mayfly_guest::job::__dispatch(job, {name})
                }}
            }}
            ::mayfly_guest::__private::export_worker!(
                __MayflyJobHandler with_types_in ::mayfly_guest::__private::worker_world
            );"
        )
    })
}

/// Keeps the function as written and appends, in an anonymous const, the
/// glue that `glue` makes from its name.
fn export(
    attribute: &str,
    attr: TokenStream,
    item: TokenStream,
    glue: impl FnOnce(&str) -> String,
) -> TokenStream {
    if !attr.is_empty() {
        return compile_error(&format!("#[{attribute}] takes no arguments"));
    }
    let name = match handler_name(&item) {
        Ok(name) => name,
        Err(message) => return compile_error(message),
    };
    let glue: TokenStream = format!("const _: () = {{ {} }};", glue(&name))
        .parse()
        .expect("generated glue is valid Rust");
    let mut out = item;
    out.extend(glue);
    out
}

/// Finds `NAME` in `... fn NAME ...`. Parsing by hand keeps this crate free of
/// dependencies (no `syn`), which keeps guest builds fast.
fn handler_name(item: &TokenStream) -> Result<String, &'static str> {
    let mut tokens = item.clone().into_iter();
    while let Some(token) = tokens.next() {
        match token {
            TokenTree::Ident(ident) if ident.to_string() == "fn" => {
                return match tokens.next() {
                    Some(TokenTree::Ident(name)) => Ok(name.to_string()),
                    _ => Err("expected a function name after `fn`"),
                };
            }
            TokenTree::Group(group) if group.delimiter() == Delimiter::Brace => break,
            _ => {}
        }
    }
    Err("the attribute goes on a function, such as `fn handle(req: Request) -> Response`")
}

fn compile_error(message: &str) -> TokenStream {
    format!("compile_error!({message:?});").parse().unwrap()
}
