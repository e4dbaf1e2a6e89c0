//! A prepared statement that binds its arguments without copying them.
//!
//! rusqlite binds every text and blob with `SQLITE_TRANSIENT`, so SQLite allocates and
//! copies each one and frees it on the next bind: on the writer's multi-row inserts that
//! was a fifth of its instructions. [`RawStatement::execute`] binds with `SQLITE_STATIC`
//! instead, steps the statement to completion, and resets and unbinds it before it
//! returns, so SQLite never holds a pointer into the arguments after the borrow ends.

use crate::model::StoreError;
use rusqlite::{Connection, ffi};
use std::ffi::{CStr, c_int};
use std::marker::PhantomData;
use std::ptr::NonNull;

/// One argument of a statement, borrowed.
#[derive(Debug, Clone, Copy)]
pub(super) enum Val<'a> {
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
    Null,
}

impl<'a> From<&'a uuid::Uuid> for Val<'a> {
    fn from(u: &'a uuid::Uuid) -> Self {
        Val::Blob(u.as_bytes())
    }
}

impl<'a> From<&'a str> for Val<'a> {
    fn from(s: &'a str) -> Self {
        Val::Text(s)
    }
}

/// A statement prepared on a connection it cannot outlive.
pub(super) struct RawStatement<'c> {
    stmt: NonNull<ffi::sqlite3_stmt>,
    db: NonNull<ffi::sqlite3>,
    _conn: PhantomData<&'c Connection>,
}

fn error(db: NonNull<ffi::sqlite3>, what: &str) -> StoreError {
    // SAFETY: `db` is the live handle of the connection the statement borrows; SQLite
    // returns a NUL-terminated message it owns, copied here before any other call.
    let msg = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db.as_ptr())) }
        .to_string_lossy()
        .into_owned();
    StoreError::Unavailable(format!("{what}: {msg}"))
}

impl<'c> RawStatement<'c> {
    pub(super) fn prepare(conn: &'c Connection, sql: &str) -> Result<Self, StoreError> {
        // SAFETY: the handle stays valid while `conn` is borrowed, which `'c` ensures.
        let db = NonNull::new(unsafe { conn.handle() })
            .ok_or_else(|| StoreError::Unavailable("the connection has no handle".into()))?;
        let len = c_int::try_from(sql.len())
            .map_err(|_| StoreError::InvalidWrite("statement text is too long".into()))?;
        let mut stmt = std::ptr::null_mut();
        // SAFETY: `sql` is valid for `len` bytes; SQLite writes the statement to `stmt`.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                db.as_ptr(),
                sql.as_ptr().cast(),
                len,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut stmt,
                std::ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(error(db, "prepare"));
        }
        let stmt =
            NonNull::new(stmt).ok_or_else(|| StoreError::InvalidWrite("empty statement".into()))?;
        Ok(Self {
            stmt,
            db,
            _conn: PhantomData,
        })
    }

    /// Bind `args` to parameters 1.., run the statement to completion, then reset and
    /// unbind it.
    pub(super) fn execute(&mut self, args: &[Val<'_>]) -> Result<(), StoreError> {
        let st = self.stmt.as_ptr();
        let result = self.bind_and_step(args);
        // SAFETY: `st` is a live statement; after these calls it holds no argument pointer.
        unsafe {
            ffi::sqlite3_reset(st);
            ffi::sqlite3_clear_bindings(st);
        }
        result
    }

    fn bind_and_step(&mut self, args: &[Val<'_>]) -> Result<(), StoreError> {
        let st = self.stmt.as_ptr();
        // SAFETY: `st` is a live statement of this connection.
        let expected = unsafe { ffi::sqlite3_bind_parameter_count(st) };
        if usize::try_from(expected).ok() != Some(args.len()) {
            return Err(StoreError::InvalidWrite(format!(
                "statement takes {expected} arguments, got {}",
                args.len()
            )));
        }
        for (i, a) in args.iter().enumerate() {
            let n = c_int::try_from(i + 1)
                .map_err(|_| StoreError::InvalidWrite("too many arguments".into()))?;
            // SAFETY: every pointer bound here stays valid until `execute` unbinds it:
            // `args` is borrowed for the whole call (SQLITE_STATIC means no copy).
            let rc = unsafe {
                match *a {
                    Val::Int(v) => ffi::sqlite3_bind_int64(st, n, v),
                    Val::Null => ffi::sqlite3_bind_null(st, n),
                    Val::Text(s) => ffi::sqlite3_bind_text64(
                        st,
                        n,
                        s.as_ptr().cast(),
                        s.len() as u64,
                        ffi::SQLITE_STATIC(),
                        ffi::SQLITE_UTF8 as u8,
                    ),
                    Val::Blob(b) => ffi::sqlite3_bind_blob64(
                        st,
                        n,
                        b.as_ptr().cast(),
                        b.len() as u64,
                        ffi::SQLITE_STATIC(),
                    ),
                }
            };
            if rc != ffi::SQLITE_OK {
                return Err(error(self.db, "bind"));
            }
        }
        // SAFETY: a live statement with every parameter bound.
        match unsafe { ffi::sqlite3_step(st) } {
            ffi::SQLITE_DONE | ffi::SQLITE_ROW => Ok(()),
            _ => Err(error(self.db, "step")),
        }
    }
}

impl Drop for RawStatement<'_> {
    fn drop(&mut self) {
        // SAFETY: the statement is live and finalized once, here.
        unsafe {
            ffi::sqlite3_finalize(self.stmt.as_ptr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_arguments_are_stored_and_the_statement_is_reusable() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (i INTEGER, s TEXT, b BLOB, n TEXT)")
            .unwrap();
        let mut st = RawStatement::prepare(&conn, "INSERT INTO t VALUES (?1, ?2, ?3, ?4)").unwrap();
        for i in 0..3 {
            let text = format!("row {i}");
            let blob = vec![i as u8; 4];
            st.execute(&[Val::Int(i), Val::Text(&text), Val::Blob(&blob), Val::Null])
                .unwrap();
        }
        let rows: Vec<(i64, String, Vec<u8>, Option<String>)> = conn
            .prepare("SELECT i, s, b, n FROM t ORDER BY i")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2], (2, "row 2".into(), vec![2; 4], None));
    }

    #[test]
    fn a_constraint_violation_is_an_error_and_the_statement_still_works() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .unwrap();
        let mut st = RawStatement::prepare(&conn, "INSERT INTO t VALUES (?1)").unwrap();
        st.execute(&[Val::Text("a")]).unwrap();
        let err = st.execute(&[Val::Text("a")]).unwrap_err();
        assert!(err.to_string().contains("UNIQUE"), "{err}");
        st.execute(&[Val::Text("b")]).unwrap();
        assert!(st.execute(&[Val::Text("x"), Val::Int(1)]).is_err());
    }
}
